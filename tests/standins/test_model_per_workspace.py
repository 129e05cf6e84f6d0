"""One model stand-in per Ready inference Workspace, behind its Service: served name, adapters, runtime, lifecycle."""

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from kubernetes import client

from devcluster import clients
from devcluster.kaito_standin import KaitoStandin
from devcluster.standin import localaddr
from devcluster.standin.models import ModelConfig, ModelFleet, model_config
from devcluster.standin.plays import Settings
from devcluster.standin.testing import TEST_LABEL, create, get, new_run_id, wait_for, wait_step, workspace

PHI = "phi-3-mini-128k-instruct"


def adapter(name):
    return {"source": {"name": name, "image": f"registry.example.com/adapters/{name}:0.0.1"}}


def inference(name, run_id, preset, adapters=(), annotations=None):
    body = workspace(name, run_id=run_id, annotations=annotations)
    body["inference"] = {
        "preset": {"name": preset},
        **({"adapters": [adapter(a) for a in adapters]} if adapters else {}),
    }
    return body


def proxy(plane, ns, name, path, body=None):
    """Through the apiserver's service proxy, as the portal reaches a Workspace's model."""
    url = f"{plane.server}/api/v1/namespaces/{ns}/services/{name}:80/proxy{path}"
    with httpx.Client(verify=clients.admin_ssl_context(plane.pki), timeout=10) as http:
        return http.post(url, json=body) if body is not None else http.get(url)


def model_ids(response):
    assert response.status_code == 200, response.text
    return [card["id"] for card in response.json()["data"]]


def refused(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_model_config_follows_kaito():
    """Served name = lower-cased last path segment; adapters are model ids under vLLM, merged under Transformers."""
    assert model_config(inference("a", "", "microsoft/Phi-3-mini-128k-instruct")) == ModelConfig(PHI, "vllm")
    assert model_config(inference("a", "", PHI)) == ModelConfig(PHI, "vllm")
    tuned = inference("a", "", "Qwen/Qwen3-0.6B", adapters=["dolly", "sql"])
    assert model_config(tuned) == ModelConfig("qwen3-0.6b", "vllm", ("dolly", "sql"))
    hf = inference("a", "", PHI, adapters=["dolly"], annotations={"kaito.sh/runtime": "transformers"})
    assert model_config(hf) == ModelConfig(PHI, "transformers")
    custom = workspace("my-template", run_id="")
    custom["inference"] = {"template": {"spec": {"containers": [{"name": "c", "image": "example/model:1"}]}}}
    assert model_config(custom).model == "my-template"


@pytest.fixture
def run_id():
    return new_run_id()


@pytest.fixture
def address():
    address = localaddr.session_address(os.getpid() + 23)
    with localaddr.local_address(address):
        yield address
    assert not localaddr.present(address)


@pytest.fixture
def standins(control_plane, address, run_id):
    """start() -> (fleet, KaitoStandin) playing this test's Workspaces; stop() both; all stopped afterwards."""
    running = []

    def start():
        fleet = ModelFleet(address, first_port=5000, token_delay=0.01).start()
        settings = Settings(step_seconds=0.1, models=fleet)
        kaito = KaitoStandin(control_plane.api_client, settings, selector=f"{TEST_LABEL}={run_id}", watch_timeout=5)
        running.append((fleet, kaito.start()))
        return fleet, kaito

    def stop():
        fleet, kaito = running.pop()
        kaito.stop()
        fleet.close()

    yield start, stop
    while running:
        stop()


def ready(api, ns, *bodies):
    for body in bodies:
        create(api, ns, body)
    for body in bodies:
        assert wait_step(api, ns, body["metadata"]["name"], "ready")["status"]["state"] == "Ready"


def published(api, ns, name):
    """(Service http targetPort, Endpoints port, Endpoints IP, pod IP) of a Workspace."""
    core = client.CoreV1Api(api)
    target = next(p.target_port for p in core.read_namespaced_service(name, ns).spec.ports if p.name == "http")
    subset = core.read_namespaced_endpoints(name, ns).subsets[0]
    pod_ip = core.read_namespaced_pod(f"{name}-0", ns).status.pod_ip
    return target, subset.ports[0].port, subset.addresses[0].ip, pod_ip


def test_two_workspaces_answer_with_their_own_models(control_plane, standins, k8s_api_client, k8s_namespace, run_id):
    start, _stop = standins
    fleet, _kaito = start()
    base = inference("base", run_id, "microsoft/Phi-3-mini-128k-instruct")
    tuned = inference("tuned", run_id, "Qwen/Qwen2.5-7B-Instruct", adapters=["dolly-adapter", "sql-adapter"])
    ready(k8s_api_client, k8s_namespace, base, tuned)

    assert model_ids(proxy(control_plane, k8s_namespace, "base", "/v1/models")) == [PHI]
    cards = proxy(control_plane, k8s_namespace, "tuned", "/v1/models").json()["data"]
    assert [c["id"] for c in cards] == ["qwen2.5-7b-instruct", "dolly-adapter", "sql-adapter"]
    assert [c["parent"] for c in cards] == [None, "qwen2.5-7b-instruct", "qwen2.5-7b-instruct"]

    ports = {}
    for name in ("base", "tuned"):
        server = fleet.get(k8s_namespace, name)
        target, port, ip, pod_ip = published(k8s_api_client, k8s_namespace, name)
        assert target == port == server.port and ip == pod_ip == fleet.host and server.token_delay == 0.01
        ports[name] = port
    assert ports["base"] != ports["tuned"] and all(5000 <= p < 5100 for p in ports.values())
    command = client.AppsV1Api(k8s_api_client).read_namespaced_stateful_set("base", k8s_namespace)
    assert f"--served-model-name {PHI} " in command.spec.template.spec.containers[0].command[-1]

    hello = [{"role": "user", "content": "hello"}]
    answer = proxy(
        control_plane, k8s_namespace, "tuned", "/v1/chat/completions", {"model": "sql-adapter", "messages": hello}
    )
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"].startswith(
        "[adapter sql-adapter]"
    )
    wrong = proxy(
        control_plane, k8s_namespace, "base", "/v1/chat/completions", {"model": "sql-adapter", "messages": hello}
    )
    assert wrong.status_code == 404 and "`sql-adapter` does not exist" in wrong.text
    # Faults are per Workspace, set through the same proxy: only "tuned" is rate-limited.
    fault = proxy(control_plane, k8s_namespace, "tuned", "/_standin/faults", {"mode": "429"})
    assert fault.status_code == 201
    limited = proxy(
        control_plane, k8s_namespace, "tuned", "/v1/chat/completions", {"model": "sql-adapter", "messages": hello}
    )
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert proxy(
        control_plane, k8s_namespace, "base", "/v1/chat/completions", {"model": PHI, "messages": hello}
    ).is_success


def test_transformers_annotation_speaks_the_transformers_runtime(
    control_plane, standins, k8s_api_client, k8s_namespace, run_id
):
    start, _stop = standins
    start()
    notes = {"kaito.sh/runtime": "transformers"}
    ready(k8s_api_client, k8s_namespace, inference("hf", run_id, PHI, adapters=["dolly"], annotations=notes))
    models = proxy(control_plane, k8s_namespace, "hf", "/v1/models").json()
    assert [(c["id"], c["owned_by"]) for c in models["data"]] == [(PHI, "kaito")]  # the adapter is merged in
    assert proxy(control_plane, k8s_namespace, "hf", "/health").json() == {"status": "Healthy"}
    body = {"model": PHI, "messages": [{"role": "user", "content": "hi"}], "logprobs": True}
    refused_field = proxy(control_plane, k8s_namespace, "hf", "/v1/chat/completions", body)
    assert refused_field.status_code == 422 and "Unsupported fields" in refused_field.json()["detail"]
    stream = proxy(
        control_plane,
        k8s_namespace,
        "hf",
        "/v1/chat/completions",
        {"model": PHI, "messages": body["messages"], "stream": True},
    )
    assert stream.status_code == 200 and "data: [DONE]" not in stream.text  # transformers serve sends no [DONE]
    assert json.loads(stream.text.strip().split("\n\n")[-1][len("data: ") :])["usage"]["completion_tokens"] > 0


def test_delete_stops_the_model_and_others_keep_answering(
    control_plane, standins, k8s_api_client, k8s_namespace, run_id
):
    start, _stop = standins
    fleet, _kaito = start()
    ready(k8s_api_client, k8s_namespace, inference("gone", run_id, PHI), inference("stays", run_id, PHI))
    port = fleet.get(k8s_namespace, "gone").port
    assert not refused(fleet.host, port)
    client.CustomObjectsApi(k8s_api_client).delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", k8s_namespace, "workspaces", "gone"
    )
    wait_for("the Workspace to go", lambda: get(k8s_api_client, k8s_namespace, "gone") is None)
    wait_for("its model to stop", lambda: fleet.get(k8s_namespace, "gone") is None and refused(fleet.host, port))
    assert proxy(control_plane, k8s_namespace, "gone", "/v1/models").status_code == 404  # no Service any more
    assert model_ids(proxy(control_plane, k8s_namespace, "stays", "/v1/models")) == [PHI]


def test_restart_recreates_models_on_their_ports_and_spec_changes_apply(
    control_plane, standins, k8s_api_client, k8s_namespace, run_id
):
    start, stop = standins
    fleet, _kaito = start()
    ready(k8s_api_client, k8s_namespace, inference("one", run_id, PHI), inference("two", run_id, PHI, adapters=["a"]))
    before = {name: fleet.get(k8s_namespace, name).port for name in ("one", "two")}
    stop()  # the stand-in process ends: its model servers go with it
    down = proxy(control_plane, k8s_namespace, "one", "/v1/models")
    assert down.status_code == 503 and "connection refused" in down.text
    fleet, _kaito = start()
    wait_for(
        "the models to be back", lambda: proxy(control_plane, k8s_namespace, "two", "/v1/models").status_code == 200
    )
    assert model_ids(proxy(control_plane, k8s_namespace, "two", "/v1/models")) == [PHI, "a"]
    assert {name: fleet.get(k8s_namespace, name).port for name in ("one", "two")} == before
    assert published(k8s_api_client, k8s_namespace, "two")[:2] == (before["two"], before["two"])

    patch = {"inference": {"preset": {"name": PHI}, "adapters": [adapter("a"), adapter("b")]}}
    client.CustomObjectsApi(k8s_api_client).patch_namespaced_custom_object(
        "kaito.sh", "v1beta1", k8s_namespace, "workspaces", "two", patch, _content_type="application/merge-patch+json"
    )
    wait_for(
        "the new adapter to be served",
        lambda: model_ids(proxy(control_plane, k8s_namespace, "two", "/v1/models")) == [PHI, "a", "b"],
        timeout=20,
    )
    assert fleet.get(k8s_namespace, "two").port == before["two"]


def test_launcher_without_the_address_routes_per_workspace(control_plane, k8s_api_client, k8s_namespace, run_id):
    """No extra address (here: a loopback --address, refused like a missing CAP_NET_ADMIN): a router per Workspace."""
    args = [sys.executable, "-m", "devcluster.standin", "--kubeconfig", str(control_plane.kubeconfig_path),
            "--address", "127.0.0.1", "--model-port", "0", "--kubelet-port", "0", "--step-seconds", "0.1",
            "--token-delay", "0.01", "--selector", f"{TEST_LABEL}={run_id}"]  # fmt: skip
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            printed = [proc.stdout.readline() for _ in range(3)]
            assert printed[0].startswith("model stand-ins on http://127.0.0.1, one per Ready inference Workspace")
            assert printed[2].startswith("portal: KAITO_INFERENCE_URL=http://127.0.0.1:")
            template = printed[2].split("=", 1)[1].strip()
            assert template.endswith("/{namespace}/{name}")
            ready(k8s_api_client, k8s_namespace, inference("a", run_id, PHI), inference("b", run_id, "Qwen/Qwen3-0.6B"))
            with httpx.Client(timeout=10) as http:
                for name, served in (("a", PHI), ("b", "qwen3-0.6b")):
                    url = template.format(namespace=k8s_namespace, name=name)
                    assert model_ids(http.get(f"{url}/v1/models")) == [served]
                body = {"model": PHI, "messages": [{"role": "user", "content": "hi"}], "stream": True}
                url = template.format(namespace=k8s_namespace, name="a")
                streamed = http.post(f"{url}/v1/chat/completions", json=body)
                assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
                missing = http.get(template.format(namespace=k8s_namespace, name="nope") + "/v1/models")
                assert missing.status_code == 503 and missing.json()["reason"] == "ServiceUnavailable"
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "service proxy cannot reach the models" in err and "still gets its own model stand-in" in err


def test_launcher_shared_model_keeps_one_server(control_plane, run_id):
    """--shared-model: the former behaviour, one model behind every Workspace (here without the address)."""
    args = [sys.executable, "-m", "devcluster.standin", "--kubeconfig", str(control_plane.kubeconfig_path),
            "--address", "127.0.0.1", "--shared-model", "--model", "my-model", "--model-port", "0",
            "--kubelet-port", "0", "--selector", f"{TEST_LABEL}={run_id}"]  # fmt: skip
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            printed = [proc.stdout.readline() for _ in range(3)]
            assert printed[0].startswith("model stand-in http://127.0.0.1:")
            url = printed[2].removeprefix("portal: KAITO_INFERENCE_URL=").strip()
            assert url.startswith("http://127.0.0.1:") and "{" not in url
            assert model_ids(httpx.get(f"{url}/v1/models", timeout=10)) == ["my-model"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert proc.returncode == 0
