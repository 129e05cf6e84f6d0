"""Pod logs through the real apiserver: it proxies pods/log to the kubelet stand-in the fake Node points at."""

import functools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from devcluster import clients
from devcluster.controlplane import ControlPlane
from devcluster.kaito_standin import KaitoStandin
from devcluster.kubelet_standin import KubeletStandin
from devcluster.model_standin import ModelStandin
from devcluster.standin import localaddr
from devcluster.standin.plays import Settings
from devcluster.standin.testing import TEST_LABEL, create, new_run_id, wait_for, wait_step, workspace

pytestmark = pytest.mark.cluster
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")
LOSS = re.compile(r"^\{'loss': \d\.\d{4}, 'grad_norm'")


@pytest.fixture
def kubelet(control_plane):
    with KubeletStandin(control_plane.api_client, line_seconds=0.1, poll_seconds=0.2) as server:
        yield server


@pytest.fixture
def run_id():
    return new_run_id()


@pytest.fixture
def kaito(control_plane, kubelet, run_id):
    settings = Settings(step_seconds=0.1, training_steps=30, kubelet=kubelet.endpoint)
    with KaitoStandin(
        control_plane.api_client, settings, selector=f"{TEST_LABEL}={run_id}", watch_timeout=5
    ) as standin:
        yield standin


def tuning_pod(api, ns, name, step):
    wait_step(api, ns, name, step)
    return (
        client.CoreV1Api(api)
        .list_namespaced_pod(ns, label_selector=f"kaito.sh/workspace={name}")
        .items[0]
        .metadata.name
    )


def test_tail_timestamps_and_growth(kaito, kubelet, k8s_api_client, k8s_namespace, run_id):
    core = client.CoreV1Api(k8s_api_client)
    create(k8s_api_client, k8s_namespace, workspace("tail", tuning=True, run_id=run_id))
    pod = tuning_pod(k8s_api_client, k8s_namespace, "tail", "running")
    node = core.read_node(core.read_namespaced_pod(pod, k8s_namespace).spec.node_name)
    assert (node.status.addresses[0].address, node.status.daemon_endpoints.kubelet_endpoint.port) == kubelet.endpoint
    wait_for("a few loss lines", lambda: "'loss'" in core.read_namespaced_pod_log(pod, k8s_namespace, container="tail"))
    tail = core.read_namespaced_pod_log(pod, k8s_namespace, container="tail", tail_lines=3, timestamps=True)
    lines = tail.splitlines()
    assert len(lines) == 3 and all(STAMP.match(line) for line in lines)
    assert LOSS.match(lines[-1][31:]), lines
    assert f"/containerLogs/{k8s_namespace}/{pod}/tail?tailLines=3&timestamps=true" in kubelet.requests
    before = core.read_namespaced_pod_log(pod, k8s_namespace, container="tail").splitlines()
    time.sleep(0.5)
    after = core.read_namespaced_pod_log(pod, k8s_namespace, container="tail").splitlines()
    assert len(after) > len(before) and after[: len(before)] == before  # the log grows, the past stays put


def test_follow_streams_until_the_job_ends(kaito, k8s_api_client, k8s_namespace, run_id):
    core = client.CoreV1Api(k8s_api_client)
    create(k8s_api_client, k8s_namespace, workspace("follow", tuning=True, run_id=run_id))
    pod = tuning_pod(k8s_api_client, k8s_namespace, "follow", "running")
    started, arrivals, text = time.monotonic(), [], b""
    response = core.read_namespaced_pod_log(pod, k8s_namespace, container="follow", follow=True, _preload_content=False)
    for chunk in response.stream(amt=None, decode_content=False):
        arrivals.append(time.monotonic() - started)
        text += chunk
    lines = text.decode().splitlines()
    assert core.read_namespaced_pod(pod, k8s_namespace).status.phase == "Succeeded"  # it closed at the end
    assert lines[-1] == "Fine-tuning completed" and sum(bool(LOSS.match(x)) for x in lines) == 24
    assert arrivals[-1] - arrivals[0] > 1.0  # streamed over time, not in one piece
    pusher = core.read_namespaced_pod_log(pod, k8s_namespace, container="pusher").splitlines()
    assert pusher[-3:-1] == ["Pushed [registry] registry.example.com/adapters/phi-3-dolly:0.0.1",
                             "ArtifactType: application/vnd.unknown.artifact.v1"]  # fmt: skip
    weights = core.read_namespaced_pod_log(pod, k8s_namespace, container="model-weights-downloader")
    assert "Pulled [registry] mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-128k-instruct:0.2.0" in weights
    data = core.read_namespaced_pod_log(pod, k8s_namespace, container="data-downloader")
    assert "Downloaded /mnt/data/dolly-15k-oai-style.parquet" in data


@pytest.mark.parametrize(("scenario", "last_line"), [
    ("tuning-fails", "torch.OutOfMemoryError: CUDA out of memory."),
    ("oom", "{'loss'"),  # killed by the kernel: no traceback, no completion
])  # fmt: skip
def test_failed_runs_end_their_logs_like_the_process_did(
    kaito, k8s_api_client, k8s_namespace, run_id, scenario, last_line
):
    create(k8s_api_client, k8s_namespace, workspace("bad", tuning=True, scenario=scenario, run_id=run_id))
    pod = tuning_pod(k8s_api_client, k8s_namespace, "bad", "finished")
    text = client.CoreV1Api(k8s_api_client).read_namespaced_pod_log(pod, k8s_namespace, container="bad")
    assert text.splitlines()[-1].startswith(last_line) and "Fine-tuning completed" not in text


def test_errors_read_like_the_kubelets(kaito, kubelet, k8s_api_client, k8s_namespace, run_id):
    core = client.CoreV1Api(k8s_api_client)
    create(k8s_api_client, k8s_namespace, workspace("pull", tuning=True, scenario="image-pull", run_id=run_id))
    pod = tuning_pod(k8s_api_client, k8s_namespace, "pull", "image-pull-backoff")
    with pytest.raises(client.ApiException) as waiting:
        core.read_namespaced_pod_log(pod, k8s_namespace, container="pull")
    assert waiting.value.status == 400
    assert (
        f'container \\"pull\\" in pod \\"{pod}\\" is waiting to start: trying and failing to pull image'
        in waiting.value.body
    )
    with pytest.raises(client.ApiException) as unknown:  # the apiserver itself refuses a container not in the spec
        core.read_namespaced_pod_log(pod, k8s_namespace, container="nope")
    assert unknown.value.status == 400 and f"container nope is not valid for pod {pod}" in unknown.value.body
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    base = f"https://{kubelet.host}:{kubelet.port}/containerLogs/{k8s_namespace}"
    for path, status, text in ((f"/{pod}/nope", 404, f'container "nope" not found in pod "{pod}"'),
                               ("/ghost/x", 404, 'pod "ghost" does not exist'),
                               (f"/{pod}/model-weights-downloader?previous=true", 400, "previous terminated container"),
                               (f"/{pod}/pull?tailLines=x", 400, '{"message": "Unable to decode query."}')):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as direct:
            urllib.request.urlopen(base + path, context=insecure, timeout=10)
        with direct.value as answer:
            assert answer.code == status and text in answer.read().decode()


def test_inference_log_carries_the_benchmark_kaito_parsed(kaito, k8s_api_client, k8s_namespace, run_id):
    create(k8s_api_client, k8s_namespace, workspace("bench", run_id=run_id))
    ws = wait_step(k8s_api_client, k8s_namespace, "bench", "ready")
    text = client.CoreV1Api(k8s_api_client).read_namespaced_pod_log("bench-0", k8s_namespace, container="bench")
    result = json.loads(next(x for x in text.splitlines() if x.startswith("KAITO_BENCHMARK_RESULT")).split(" ", 2)[2])
    assert result["vllm_total_tpm"] == float(ws["status"]["performance"]["metrics"]["peakTokensPerMinute"]["value"])


def test_apiserver_verifies_the_kubelet_certificate_when_told(tmp_path, run_id):
    """With --kubelet-certificate-authority a CA-issued kubelet cert works and a self-signed one is refused."""
    ca_flag = f"--kubelet-certificate-authority={tmp_path / 'pki' / 'ca.crt'}"
    with ControlPlane(work_dir=tmp_path, extra_apiserver_args=[ca_flag]) as plane, plane.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "tls"}})
        for signed, name in ((True, "good"), (False, "bad")):
            with KubeletStandin(plane.api_client, line_seconds=0.05, ca_dir=tmp_path / "pki" if signed else None) as kl:
                settings = Settings(step_seconds=0.1, training_steps=30, kubelet=kl.endpoint)
                with KaitoStandin(plane.api_client, settings, selector=f"{TEST_LABEL}={run_id}", watch_timeout=5):
                    create(api, "tls", workspace(name, tuning=True, run_id=run_id))
                    pod = tuning_pod(api, "tls", name, "running")
                    if signed:  # the line appears ~0.25 s after the container's start: slower under load
                        read = functools.partial(
                            client.CoreV1Api(api).read_namespaced_pod_log, pod, "tls", container=name
                        )
                        wait_for("the checkpoint line", lambda read=read: "Loading checkpoint shards" in read(), 10)
                        continue
                    with pytest.raises(client.ApiException) as refused:
                        client.CoreV1Api(api).read_namespaced_pod_log(pod, "tls", container=name)
                    assert (
                        refused.value.status == 500 and "certificate signed by unknown authority" in refused.value.body
                    )


def test_service_proxy_reaches_the_model_standin(control_plane, kubelet, k8s_api_client, k8s_namespace, run_id):
    """The apiserver's services/<ws>:80/proxy dials the Endpoints the KAITO stand-in wrote: a non-loopback local address."""
    address = localaddr.session_address(os.getpid())
    with (
        localaddr.local_address(address),
        ModelStandin(host=address, port=5000, model="phi-3-mini-128k-instruct") as model,
    ):
        settings = Settings(step_seconds=0.1, model_endpoint=(address, 5000), kubelet=kubelet.endpoint)
        with KaitoStandin(control_plane.api_client, settings, selector=f"{TEST_LABEL}={run_id}", watch_timeout=5):
            create(k8s_api_client, k8s_namespace, workspace("chat", run_id=run_id))
            wait_step(k8s_api_client, k8s_namespace, "chat", "ready")
            core = client.CoreV1Api(k8s_api_client)
            subset = core.read_namespaced_endpoints("chat", k8s_namespace).subsets[0]
            assert (subset.addresses[0].ip, subset.ports[0].port, subset.addresses[0].target_ref.name) == (
                address,
                5000,
                "chat-0",
            )
            assert core.read_namespaced_pod("chat-0", k8s_namespace).status.pod_ip == address
            slices = client.DiscoveryV1Api(k8s_api_client).list_namespaced_endpoint_slice(
                k8s_namespace, label_selector="kubernetes.io/service-name=chat").items  # fmt: skip
            assert slices[0].endpoints[0].addresses == [address]
            url = f"{control_plane.server}/api/v1/namespaces/{k8s_namespace}/services/chat:80/proxy/v1/models"
            status, body = clients.https_get(url, clients.admin_ssl_context(control_plane.pki))
            assert status == 200 and json.loads(body)["data"][0]["id"] == "phi-3-mini-128k-instruct"
            assert model.requests()[-1]["path"] == "/v1/models"
    assert not localaddr.present(address)


def test_loopback_endpoints_are_refused(control_plane, k8s_api_client, k8s_namespace, run_id):
    """Why the local address is needed: the apiserver refuses 127.0.0.1 Endpoints, so the proxy has nowhere to go."""
    settings = Settings(step_seconds=0.1, model_endpoint=("127.0.0.1", 5000))
    with KaitoStandin(control_plane.api_client, settings, selector=f"{TEST_LABEL}={run_id}", watch_timeout=5):
        create(k8s_api_client, k8s_namespace, workspace("loop", run_id=run_id))
        wait_step(k8s_api_client, k8s_namespace, "loop", "ready")
    core = client.CoreV1Api(k8s_api_client)
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_endpoints(k8s_namespace, {"metadata": {"name": "loop"}, "subsets": [
            {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": 5000}]}]})  # fmt: skip
    assert refused.value.status == 422 and "may not be in the loopback range" in refused.value.body
    url = f"{control_plane.server}/api/v1/namespaces/{k8s_namespace}/services/loop:80/proxy/v1/models"
    status, body = clients.https_get(url, clients.admin_ssl_context(control_plane.pki))
    assert status == 503 and "no endpoints available" in body


def test_localaddr_is_idempotent_and_explains_missing_rights():
    address = localaddr.session_address(os.getpid() + 7)
    with localaddr.local_address(address):
        assert localaddr.present(address) and localaddr.add(address) is False
        with localaddr.local_address(address):  # nested: not ours, so not removed
            pass
        assert localaddr.present(address)
    assert not localaddr.present(address) and localaddr.remove(address) is False
    with pytest.raises(localaddr.LocalAddressError, match=r"outside 127\.0\.0\.0/8"):
        localaddr.add("127.0.0.9")
    # As nobody, from a world-readable copy (the module uses only the standard library): the checkout itself
    # may sit in a folder only root can enter, such as one made by `mktemp -d`.
    folder = Path(tempfile.mkdtemp(prefix="localaddr-"))
    try:
        folder.chmod(0o755)
        script = folder / "localaddr.py"
        shutil.copyfile(localaddr.__file__, script)
        script.chmod(0o644)
        run = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, str(script),
               "add", address]  # fmt: skip
        done = subprocess.run(run, capture_output=True, text=True, timeout=30, cwd=folder)
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 2 and "needs CAP_NET_ADMIN (root)" in done.stdout and "sudo ip addr add" in done.stdout


def test_kubelet_cli_serves_and_stops_on_sigterm(control_plane):
    args = [
        sys.executable,
        "-m",
        "devcluster.kubelet_standin",
        "--kubeconfig",
        str(control_plane.kubeconfig_path),
        "--port",
        "0",
    ]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        _serve_and_stop(proc)
    assert proc.returncode == 0


def _serve_and_stop(proc):
    try:
        line = proc.stdout.readline()
        assert "STAND-IN kubelet" in line and "listening on https://127.0.0.1:" in line
        port = int(line.rsplit(":", 1)[1])
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        assert urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=insecure, timeout=10).read() == b"ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_all_in_one_launcher_for_the_sandbox(control_plane, k8s_api_client, k8s_namespace, run_id):
    """python -m devcluster.standin: address on lo, per-Workspace models, kubelet and KAITO; SIGTERM undoes it all."""
    address = localaddr.session_address(os.getpid() + 11)
    args = [sys.executable, "-m", "devcluster.standin", "--kubeconfig", str(control_plane.kubeconfig_path), "--address",
            address, "--model-port", "0", "--kubelet-port", "0", "--step-seconds", "0.1", "--selector", f"{TEST_LABEL}={run_id}"]  # fmt: skip
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            printed = [proc.stdout.readline() for _ in range(3)]
            assert printed[0].startswith(f"model stand-ins on http://{address}, one per Ready")
            assert localaddr.present(address)
            assert "leave KAITO_INFERENCE_URL empty" in printed[2]
            create(k8s_api_client, k8s_namespace, workspace("all", run_id=run_id))
            wait_step(k8s_api_client, k8s_namespace, "all", "ready")
            url = f"{control_plane.server}/api/v1/namespaces/{k8s_namespace}/services/all:80/proxy/v1/models"
            status, body = clients.https_get(url, clients.admin_ssl_context(control_plane.pki))
            assert status == 200 and json.loads(body)["data"][0]["id"] == "phi-3-mini-128k-instruct"
            log = client.CoreV1Api(k8s_api_client).read_namespaced_pod_log("all-0", k8s_namespace, container="all")
            assert "Application startup complete." in log
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert proc.returncode == 0 and not localaddr.present(address)
