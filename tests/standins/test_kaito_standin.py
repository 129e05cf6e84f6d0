"""The KAITO stand-in on the real apiserver: v0.12's status sequences, scenarios, objects, events, deletion, restarts."""

import signal
import subprocess
import sys
import time

import pytest
from kubernetes import client

from devcluster.controlplane import ControlPlane
from devcluster.kaito_standin import KaitoStandin
from devcluster.standin import kaito_logic
from devcluster.standin.manifests import PLAYED_BY, node_names, nodeclaim_name
from devcluster.standin.plays import Settings
from devcluster.standin.testing import (
    TEST_LABEL,
    StatusRecorder,
    create,
    get,
    new_run_id,
    wait_for,
    wait_step,
    workspace,
)

pytestmark = pytest.mark.cluster
NAP_WAITING = (("NodesReady", "False", "NodeNotReady"), ("NodeClaimReady", "False", "NodeClaimNotReady"),
               ("ResourceReady", "False", "NodeClaimNotReady"))  # fmt: skip
NAP_PLUGINS = (("NodesReady", "False", "NodePluginsNotReady"), ("NodeClaimReady", "True", "NodeClaimsReady"),
               ("ResourceReady", "False", "NodePluginsNotReady"))  # fmt: skip
NAP_READY = (("NodesReady", "True", "NodesReady"), ("NodeClaimReady", "True", "NodeClaimsReady"),
             ("ResourceReady", "True", "workspaceResourceStatusSuccess"))  # fmt: skip
BYO_READY = (("NodesReady", "True", "NodesReady"), ("ResourceReady", "True", "workspaceResourceStatusSuccess"))
INF_PENDING = (("InferenceReady", "False", "WorkspaceInferenceStatusPending"),
               ("WorkspaceSucceeded", "False", "workspacePending"))  # fmt: skip
INF_READY = (("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
             ("WorkspaceSucceeded", "True", "workspaceSucceeded"), ("BenchmarkCompleted", "True", "BenchmarkCompleted"))  # fmt: skip
TUNE_PENDING = (
    ("JobStarted", "False", "WorkspaceTuningJobStatusPending"),
    ("WorkspaceSucceeded", "False", "workspacePending"),
)
TUNE_RUNNING = (
    ("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
    ("WorkspaceSucceeded", "False", "workspacePending"),
)
TUNE_DONE = (
    ("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
    ("WorkspaceSucceeded", "True", "workspaceSucceeded"),
)
TUNE_FAILED = (
    ("JobStarted", "False", "WorkspaceTuningJobStatusFailed"),
    ("WorkspaceSucceeded", "False", "workspaceFailed"),
)
START = (None, ())


def sig(state, *groups):
    return (state, tuple(c for group in groups for c in group))


def inf_fail(reason):
    return (("InferenceReady", "False", reason), ("WorkspaceSucceeded", "False", "workspacePending"))


NAP_INF = [START, sig("Pending", NAP_WAITING, INF_PENDING), sig("Pending", NAP_PLUGINS, INF_PENDING),
           sig("Pending", NAP_READY, INF_PENDING)]  # fmt: skip
NAP_TUNE = [START, sig("Pending", NAP_WAITING, TUNE_PENDING), sig("Pending", NAP_PLUGINS, TUNE_PENDING),
            sig("Pending", NAP_READY, TUNE_PENDING)]  # fmt: skip


@pytest.fixture
def run_id():
    return new_run_id()


@pytest.fixture
def standin(control_plane, run_id):
    """start(**settings) -> a KaitoStandin that plays only this test's Workspaces; all are stopped afterwards."""
    started = []

    def start(plane=None, **settings):
        merged = {"step_seconds": 0.1, "training_steps": 2, **settings}
        plane = plane or control_plane
        one = KaitoStandin(plane.api_client, Settings(**merged), selector=f"{TEST_LABEL}={run_id}", watch_timeout=5)
        started.append(one.start())
        return one

    yield start
    for one in started:
        one.stop()


def play(api, ns, body, final_step, timeout=45):
    """Create the Workspace, wait for the stand-in's last step, return (final Workspace, recorded signatures)."""
    recorder = StatusRecorder(api, ns, body["metadata"]["name"])
    create(api, ns, body)
    final = wait_step(api, ns, body["metadata"]["name"], final_step, timeout)
    return final, recorder.stop(final)


def events(api, ns, name):
    found = client.CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return {(e.type, e.reason): e for e in found}


def test_inference_nap_sequence_and_status(standin, k8s_api_client, k8s_namespace, run_id):
    standin()
    final, seen = play(k8s_api_client, k8s_namespace, workspace("phi", run_id=run_id), "ready")
    assert seen == [*NAP_INF, sig("Ready", NAP_READY, INF_READY)]
    status = final["status"]
    assert status["targetNodeCount"] == 1 and status["workerNodes"] == node_names(final, 1)
    messages = {c["type"]: c["message"] for c in status["conditions"]}
    assert messages["InferenceReady"] == "Inference has been deployed successfully"
    assert messages["WorkspaceSucceeded"] == "workspace succeeds"
    assert messages["NodeClaimReady"] == "Enough NodeClaims are ready"
    assert messages["BenchmarkCompleted"] == "benchmark result has been recorded"
    assert {c["observedGeneration"] for c in status["conditions"]} == {final["metadata"]["generation"]}
    metric = status["performance"]["metrics"]["peakTokensPerMinute"]
    assert metric["unit"] == "tokens/min" and metric["description"] == "stress/high-concurrency"
    assert float(metric["value"]) > 1000 and metric["config"]["maxConcurrency"] == "64"


def test_tuning_nap_sequence(standin, k8s_api_client, k8s_namespace, run_id):
    standin()
    final, seen = play(k8s_api_client, k8s_namespace, workspace("tune", tuning=True, run_id=run_id), "finished")
    assert seen == [*NAP_TUNE, sig("Running", NAP_READY, TUNE_RUNNING), sig("Succeeded", NAP_READY, TUNE_DONE)]
    assert "performance" not in final["status"]
    messages = {c["type"]: c["message"] for c in final["status"]["conditions"]}
    assert messages == {**messages, "JobStarted": "Tuning job has started", "WorkspaceSucceeded": "workspace succeeds"}


def test_byo_and_benchmark_rules(standin, k8s_api_client, k8s_namespace, run_id):
    """BYO (no instanceType) has no NodeClaimReady; no benchmark for Transformers or kaito.sh/disable-benchmark."""
    standin()
    _final, seen = play(k8s_api_client, k8s_namespace, workspace("byo", instance_type="", run_id=run_id), "ready")
    assert seen == [START, sig("Pending", BYO_READY, INF_PENDING), sig("Ready", BYO_READY, INF_READY)]
    assert not client.CustomObjectsApi(k8s_api_client).list_cluster_custom_object(
        "karpenter.sh", "v1", "nodeclaims", label_selector="kaito.sh/workspace=byo")["items"]  # fmt: skip
    for name, notes in (
        ("hf", {"kaito.sh/runtime": "transformers"}),
        ("nobench", {"kaito.sh/disable-benchmark": "true"}),
    ):
        body = workspace(name, run_id=run_id, annotations=notes)
        body["resource"]["count"] = 2  # KAITO sizes Transformers by resource.count, vLLM by its estimator
        ws, seen = play(k8s_api_client, k8s_namespace, body, "ready")
        assert seen[-1] == sig("Ready", NAP_READY, INF_READY[:2]) and "performance" not in ws["status"]
        nodes = 2 if name == "hf" else 1
        assert ws["status"]["targetNodeCount"] == nodes and len(ws["status"]["workerNodes"]) == nodes
        pods = client.CoreV1Api(k8s_api_client).list_namespaced_pod(
            k8s_namespace, label_selector=f"kaito.sh/workspace={name}"
        )
        assert [p.status.phase for p in pods.items] == ["Running"] * nodes


def test_inference_objects_and_events(standin, k8s_api_client, k8s_namespace, run_id):
    standin()
    ws, _seen = play(k8s_api_client, k8s_namespace, workspace("objs", run_id=run_id), "ready")
    core, apps = client.CoreV1Api(k8s_api_client), client.AppsV1Api(k8s_api_client)
    svc = core.read_namespaced_service("objs", k8s_namespace)
    assert svc.spec.type == "ClusterIP" and svc.metadata.owner_references[0].uid == ws["metadata"]["uid"]
    assert svc.spec.selector == {"kaito.sh/workspace": "objs", "statefulset.kubernetes.io/pod-name": "objs-0"}
    assert (svc.spec.ports[0].name, svc.spec.ports[0].port, svc.spec.ports[0].target_port) == ("http", 80, 5000)
    assert core.read_namespaced_service("objs-headless", k8s_namespace).spec.cluster_ip == "None"
    sts = apps.read_namespaced_stateful_set("objs", k8s_namespace)
    assert (sts.spec.replicas, sts.status.ready_replicas, sts.spec.service_name) == (1, 1, "objs-headless")
    pod = core.read_namespaced_pod("objs-0", k8s_namespace)
    node_name = node_names(ws, 1)[0]
    assert pod.spec.node_name == node_name and pod.status.phase == "Running"
    assert pod.spec.containers[0].name == "objs" and pod.metadata.owner_references[0].kind == "StatefulSet"
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    node = core.read_node(node_name)
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "Standard_NC24ads_A100_v4"
    assert node.metadata.labels["nvidia.com/gpu.product"] and node.status.allocatable["nvidia.com/gpu"] == "1"
    claim = client.CustomObjectsApi(k8s_api_client).get_cluster_custom_object(
        "karpenter.sh", "v1", "nodeclaims", nodeclaim_name(ws))  # fmt: skip
    for obj in (svc, sts, pod, node):
        assert obj.metadata.annotations[PLAYED_BY] == "kaito-standin"
    assert claim["metadata"]["annotations"][PLAYED_BY] == "kaito-standin"
    assert ws["metadata"]["finalizers"] == ["workspace.finalizer.kaito.sh"]
    assert ws["metadata"]["annotations"]["workspace.kaito.io/revision"] == "1"
    assert not core.read_namespaced_endpoints("objs", k8s_namespace).subsets  # no --model-url: nothing to point at
    seen = events(k8s_api_client, k8s_namespace, "objs-0")
    assert {r for _t, r in seen} == {"Scheduled", "Pulling", "Pulled", "Created", "Started"}
    scheduled = seen[("Normal", "Scheduled")]
    assert scheduled.involved_object.uid == pod.metadata.uid and scheduled.source.component == "default-scheduler"
    assert scheduled.message == f"Successfully assigned {k8s_namespace}/objs-0 to {node_name}"
    assert ("Normal", "NodeClaimCreated") in events(k8s_api_client, k8s_namespace, "objs")
    assert ("Normal", "SuccessfulCreate") in events(k8s_api_client, k8s_namespace, "objs")


def test_tuning_objects_and_events(standin, k8s_api_client, k8s_namespace, run_id):
    standin()
    ws, _seen = play(k8s_api_client, k8s_namespace, workspace("ft", tuning=True, run_id=run_id), "finished")
    job = client.BatchV1Api(k8s_api_client).read_namespaced_job("ft", k8s_namespace)
    assert job.metadata.labels["kaito.sh/workspace"] == "ft" and job.status.succeeded == 1
    assert {c.type for c in job.status.conditions} == {"SuccessCriteriaMet", "Complete"}
    (pod,) = (
        client.CoreV1Api(k8s_api_client)
        .list_namespaced_pod(k8s_namespace, label_selector="kaito.sh/workspace=ft")
        .items
    )
    assert pod.metadata.name.startswith("ft-") and len(pod.metadata.name) == 8
    assert pod.metadata.owner_references[0].uid == job.metadata.uid and pod.spec.node_name == node_names(ws, 1)[0]
    assert pod.status.phase == "Succeeded"
    assert [c.name for c in pod.spec.init_containers] == ["model-weights-downloader", "data-downloader"]
    assert [c.name for c in pod.spec.containers] == ["ft", "pusher", "pause"]
    main = pod.status.container_statuses[0]
    assert (main.state.terminated.reason, main.state.terminated.exit_code) == ("Completed", 0)
    assert (
        events(k8s_api_client, k8s_namespace, "ft")[("Normal", "SuccessfulCreate")].message
        == f"Created pod: {pod.metadata.name}"
    )
    assert ("Normal", "Completed") in events(k8s_api_client, k8s_namespace, "ft")


SCENARIOS = [  # name, tuning, scenario, last step, final signature, extra check
    ("q-inf", False, "quota", "workload-created", sig("Pending", NAP_READY, INF_PENDING), "quota"),
    ("q-ft", True, "quota", "workload-created", sig("Pending", NAP_READY, TUNE_PENDING), "quota"),
    (
        "u-inf",
        False,
        "unschedulable",
        "workload-created",
        sig("Pending", NAP_READY, inf_fail("Unschedulable")),
        "sched",
    ),
    ("u-ft", True, "unschedulable", "workload-created", sig("Running", NAP_READY, TUNE_RUNNING), "sched"),
    ("i-inf", False, "image-pull", "image-pull-backoff", sig("Pending", NAP_READY, inf_fail("ImagePullError")), "pull"),
    ("i-ft", True, "image-pull", "image-pull-backoff", sig("Running", NAP_READY, TUNE_RUNNING), "pull"),
    ("o-inf", False, "oom", "crash-loop", sig("Pending", NAP_READY, inf_fail("ContainerOOMKilled")), "oom"),
    ("o-ft", True, "oom", "finished", sig("Failed", NAP_READY, TUNE_FAILED), "oom"),
    ("c-inf", False, "crash", "crash-loop", sig("Pending", NAP_READY, inf_fail("ContainerCrashLoopBackOff")), ""),
    ("f-ft", True, "tuning-fails", "finished", sig("Failed", NAP_READY, TUNE_FAILED), "error"),
]


@pytest.mark.parametrize(
    ("name", "tuning", "scenario", "last", "final", "check"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
def test_failure_scenarios(standin, k8s_api_client, k8s_namespace, run_id, name, tuning, scenario, last, final, check):
    standin()
    body = workspace(name, tuning=tuning, scenario=scenario, run_id=run_id)
    ws, seen = play(k8s_api_client, k8s_namespace, body, last)
    assert seen[: len(NAP_INF)] == (NAP_TUNE if tuning else NAP_INF) and seen[-1] == final
    pods = (
        client.CoreV1Api(k8s_api_client)
        .list_namespaced_pod(k8s_namespace, label_selector=f"kaito.sh/workspace={name}")
        .items
    )
    message = {c["type"]: c["message"] for c in ws["status"]["conditions"]}.get("InferenceReady", "")
    owner = events(k8s_api_client, k8s_namespace, name)
    pod_events = events(k8s_api_client, k8s_namespace, pods[0].metadata.name) if pods else {}
    if check == "quota":
        assert not pods and "exceeded quota: gpu-quota" in owner[("Warning", "FailedCreate")].message
    elif check == "sched":
        assert pods[0].spec.node_name is None and ("Warning", "FailedScheduling") in pod_events
        assert tuning or message.startswith(f'pod "{name}-0" is unschedulable: 0/1 nodes are available')
    elif check == "pull":
        assert pods[0].status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
        assert {("Warning", "Failed"), ("Normal", "BackOff")} <= set(pod_events)
        assert tuning or message.startswith(
            f'container "{name}" image pull failed (ImagePullBackOff): Back-off pulling'
        )
    elif check == "oom":
        cs = pods[0].status.container_statuses[0]
        term = cs.state.terminated if tuning else cs.last_state.terminated
        assert (term.reason, term.exit_code) == ("OOMKilled", 137)
        node_events = events(k8s_api_client, "default", pods[0].spec.node_name)
        assert node_events[("Warning", "OOMKilling")].involved_object.kind == "Node"
        assert tuning or message.startswith(f'container "{name}" was OOMKilled (exit code 137)')
    elif check == "error":
        term = pods[0].status.container_statuses[0].state.terminated
        assert (term.reason, term.exit_code, pods[0].status.phase) == ("Error", 1, "Failed")


def test_delete_cleans_up(standin, k8s_api_client, k8s_namespace, run_id):
    standin()
    core = client.CoreV1Api(k8s_api_client)
    play(k8s_api_client, k8s_namespace, workspace("gone", run_id=run_id), "ready")
    recorder = StatusRecorder(k8s_api_client, k8s_namespace, "gone")
    client.CustomObjectsApi(k8s_api_client).delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", k8s_namespace, "workspaces", "gone"
    )
    wait_for("the Workspace to go", lambda: get(k8s_api_client, k8s_namespace, "gone") is None)
    assert ("WorkspaceDeleting", "True", "workspaceDeleted") in recorder.stop()[-1][1]
    assert not core.list_namespaced_pod(k8s_namespace).items and not core.list_namespaced_service(k8s_namespace).items
    assert not client.AppsV1Api(k8s_api_client).list_namespaced_stateful_set(k8s_namespace).items
    assert not core.list_node(
        label_selector=f"kaito.sh/workspace=gone,kaito.sh/workspacenamespace={k8s_namespace}"
    ).items


def test_deleted_while_down_and_orphans(standin, k8s_api_client, k8s_namespace, run_id):
    """A Workspace deleted while the stand-in is down waits on KAITO's finalizer; orphans are swept on the next start."""
    first = standin()
    custom, core = client.CustomObjectsApi(k8s_api_client), client.CoreV1Api(k8s_api_client)
    for name in ("held", "orphan"):
        play(k8s_api_client, k8s_namespace, workspace(name, tuning=True, run_id=run_id), "finished")
    first.stop()
    custom.patch_namespaced_custom_object(
        "kaito.sh",
        "v1beta1",
        k8s_namespace,
        "workspaces",
        "orphan",
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )
    for name in ("held", "orphan"):
        custom.delete_namespaced_custom_object("kaito.sh", "v1beta1", k8s_namespace, "workspaces", name)
    time.sleep(1)
    assert get(k8s_api_client, k8s_namespace, "held")["metadata"]["deletionTimestamp"]  # the finalizer holds it
    assert get(k8s_api_client, k8s_namespace, "orphan") is None
    assert len(core.list_namespaced_pod(k8s_namespace).items) == 2  # nothing removed the orphan's pod
    standin()
    wait_for("held to go", lambda: get(k8s_api_client, k8s_namespace, "held") is None)
    wait_for("orphans to go", lambda: not core.list_namespaced_pod(k8s_namespace).items)
    assert not client.BatchV1Api(k8s_api_client).list_namespaced_job(k8s_namespace).items


def test_standin_restart_resumes_without_duplicates(standin, k8s_api_client, k8s_namespace, run_id):
    first = standin(training_steps=30)
    recorder = StatusRecorder(k8s_api_client, k8s_namespace, "again")
    create(k8s_api_client, k8s_namespace, workspace("again", tuning=True, run_id=run_id))
    wait_step(k8s_api_client, k8s_namespace, "again", "running")
    first.stop()
    standin(training_steps=2)
    final = wait_step(k8s_api_client, k8s_namespace, "again", "finished")
    assert recorder.stop(final) == [
        *NAP_TUNE,
        sig("Running", NAP_READY, TUNE_RUNNING),
        sig("Succeeded", NAP_READY, TUNE_DONE),
    ]
    assert len(client.CoreV1Api(k8s_api_client).list_namespaced_pod(k8s_namespace).items) == 1


def test_survives_apiserver_restarts_crashes_and_410(standin, run_id):
    with ControlPlane() as plane, plane.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "restarts"}})
        kaito = standin(plane, step_seconds=0.3, training_steps=20)
        create(api, "restarts", workspace("long", tuning=True, run_id=run_id))
        wait_step(api, "restarts", "long", "running", timeout=60)
        plane.restart_apiserver(graceful=True)
        plane.restart_apiserver(graceful=False)
        plane.expire_watch_history()
        create(api, "restarts", workspace("after", run_id=run_id))  # the watch must be back to see this one
        assert wait_step(api, "restarts", "long", "finished", timeout=60)["status"]["state"] == "Succeeded"
        assert wait_step(api, "restarts", "after", "ready", timeout=60)["status"]["state"] == "Ready"
        assert kaito.relists >= 2  # restarts in quick succession may share one relist


def test_cli_runs_and_stops_on_sigterm(control_plane, k8s_api_client, k8s_namespace, run_id):
    args = [
        "--kubeconfig",
        str(control_plane.kubeconfig_path),
        "--step-seconds",
        "0.1",
        "--selector",
        f"{TEST_LABEL}={run_id}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "devcluster.kaito_standin", *args], stderr=subprocess.PIPE, text=True
    )
    try:
        create(k8s_api_client, k8s_namespace, workspace("cli", run_id=run_id))
        assert wait_step(k8s_api_client, k8s_namespace, "cli", "ready")["status"]["state"] == "Ready"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "STAND-IN for KAITO v0.12" in err and "kaito-standin stopped" in err


def test_logic_ranks_failures_like_kaito():
    """Unit level: OOM outranks image pulls; a failed Job wins over a running one; deletion only adds WorkspaceDeleting."""
    oom = {"name": "a", "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}, "state": {}}
    pull = {"name": "b", "state": {"waiting": {"reason": "ErrImagePull", "message": "x"}}}
    pods = [{"metadata": {"name": "p"}, "status": {"containerStatuses": [pull, oom]}}]
    assert kaito_logic.classify_inference_pod_failure(pods)[0] == "ContainerOOMKilled"
    ws = {"metadata": {"generation": 2, "deletionTimestamp": "now"}, "tuning": {}, "status": {"state": "Running"}}
    deleting = kaito_logic.sync_status(ws, nodes=[], nodeclaims=[])
    assert deleting["state"] == "Running" and [c["type"] for c in deleting["conditions"]] == ["WorkspaceDeleting"]
    status = {}
    kaito_logic.apply_tuning_status(status, ws, {"status": {"active": 1, "failed": 1}})
    assert status["state"] == "Failed"
