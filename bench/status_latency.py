"""Status latency: KAITO status patch → plain watch (a), portal row (b), WebSocket fragment (c), at 1,000 Workspaces."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="kaito-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{WORK / 'bench.sqlite3'}")
os.environ.pop("REDIS_URL", None)  # one process: the in-memory channel layer carries (c)
os.environ["PORTAL_APPLY_AFTER_APPROVAL"] = "off"
os.environ["PORTAL_PREFLIGHT_AFTER_CREATE"] = "off"

import django  # noqa: E402

django.setup()

from channels.testing import WebsocketCommunicator  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import watch  # noqa: E402

from catalog.models import InstanceType, Preset  # noqa: E402
from devcluster.controlplane import ControlPlane  # noqa: E402
from portal.asgi import application  # noqa: E402
from workspaces import notify  # noqa: E402
from workspaces.cluster import ConnectionSettings, connect  # noqa: E402
from workspaces.leader import LeaderElector  # noqa: E402
from workspaces.models import Membership, Status, Team, WorkspaceRequest  # noqa: E402
from workspaces.reconciler import Reconciler  # noqa: E402
from workspaces.services.preview import request_manifests  # noqa: E402

NS = "bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def condition(kind: str, status: str, reason: str) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"type": kind, "status": status, "reason": reason, "message": "", "lastTransitionTime": now}


READY = {
    "state": "Ready",
    "conditions": [
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
        condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
    ],
}
PENDING = {
    "state": "Pending",
    "conditions": [
        condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        condition("InferenceReady", "False", "WorkspaceInferenceStatusPending"),
        condition("WorkspaceSucceeded", "False", "workspacePending"),
    ],
}


def setup(plane: ControlPlane, count: int) -> tuple[list[WorkspaceRequest], object]:
    call_command("migrate", verbosity=0)
    with open(os.devnull, "w") as quiet:
        call_command("sync_catalog", stdout=quiet)
    user = get_user_model().objects.create_user("bench", password="bench-pw")
    team = Team.objects.create(name="Bench", slug="bench", namespace=NS)
    Membership.objects.create(team=team, user=user, role="approver")
    preset = Preset.objects.get(name="microsoft/Phi-3-mini-128k-instruct")
    instance = InstanceType.objects.get(name="Standard_NV36ads_A10_v5")
    now = timezone.now()
    WorkspaceRequest.objects.bulk_create(
        WorkspaceRequest(
            team=team,
            requester=user,
            kind="inference",
            name=f"ws-{i:04d}",
            namespace=NS,
            preset=preset,
            instance_type=instance,
            hours=8,
            status=Status.PROVISIONING,
            applied_at=now,
            expires_at=now + timezone.timedelta(days=1),
        )
        for i in range(count)
    )
    api = plane.api_client()
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
    cluster = connect(ConnectionSettings(kubeconfig=str(plane.kubeconfig_path)))
    requests = list(WorkspaceRequest.objects.with_related().order_by("pk"))
    started = time.perf_counter()
    for request in requests:
        workspace = cluster.apply(request_manifests(request=request)[-1])
        cluster.custom.patch_namespaced_custom_object_status(
            "kaito.sh",
            "v1beta1",
            NS,
            "workspaces",
            workspace["metadata"]["name"],
            {"status": READY},
            _content_type="application/merge-patch+json",
        )
    print(f"created {count} Workspaces with Ready status in {time.perf_counter() - started:.1f} s")
    return requests, cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with ControlPlane() as plane:
        requests, cluster = setup(plane, args.workspaces)
        elector = LeaderElector(cluster, namespace="default", identity="bench")
        reconciler = Reconciler(cluster, elector=elector, resync_seconds=3600, watch_window=30)
        assert elector.try_acquire_or_renew()
        started = time.perf_counter()
        reconciler.resource_version = reconciler.resync()
        cold = time.perf_counter() - started
        ready = WorkspaceRequest.objects.filter(status=Status.READY).count()
        print(
            f"cold start: {ready} of {len(requests)} requests brought to READY in {cold:.2f} s "
            f"({cold / len(requests) * 1000:.1f} ms per Workspace)"
        )
        measure(plane, cluster, reconciler, requests, args.samples)


def measure(plane: ControlPlane, cluster: object, reconciler: Reconciler, requests: list, samples: int) -> None:
    seen_watch: dict[str, float] = {}
    seen_row: dict[int, float] = {}
    seen_ws: dict[int, float] = {}
    stop = threading.Event()

    def plain_watch() -> None:
        api = k8s.CustomObjectsApi(plane.api_client())
        version = api.list_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces")["metadata"][
            "resourceVersion"
        ]
        while not stop.is_set():
            for event in watch.Watch().stream(
                api.list_namespaced_custom_object,
                "kaito.sh",
                "v1beta1",
                NS,
                "workspaces",
                resource_version=version,
                timeout_seconds=5,
            ):
                obj = event["raw_object"]
                version = obj["metadata"]["resourceVersion"]
                seen_watch[f"{obj['metadata']['name']}/{obj.get('status', {}).get('state')}"] = time.perf_counter()

    original = notify.request_changed

    def recording(*, request_id: int, created: bool = False) -> None:
        seen_row[request_id] = time.perf_counter()  # called right after the row's transaction commits
        original(request_id=request_id, created=created)

    notify.request_changed = recording
    web = Client()
    web.login(username="bench", password="bench-pw")
    cookie = f"sessionid={web.cookies['sessionid'].value}".encode()
    loop = asyncio.new_event_loop()
    communicator = WebsocketCommunicator(
        application, "/ws/requests/", headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)]
    )
    assert loop.run_until_complete(communicator.connect())[0]

    async def listen() -> None:
        while not stop.is_set():
            # A timeout would make the test communicator cancel the consumer, so wait long; the thread is a daemon.
            html = await communicator.receive_from(timeout=3600)
            marker = html.split('<tr id="request-', 1)[-1].split('"', 1)[0]
            if marker.isdigit():
                seen_ws[int(marker)] = time.perf_counter()

    threads = [
        threading.Thread(target=plain_watch, daemon=True),
        threading.Thread(target=lambda: loop.run_until_complete(listen()), daemon=True),
        threading.Thread(target=reconciler.run, daemon=True),
    ]
    for thread in threads:
        thread.start()
    time.sleep(3)
    a, b, c = [], [], []
    current = {request.name: "Ready" for request in requests}  # every sample must really change the status
    for i in range(samples):
        request = requests[(i * 7) % len(requests)]
        state = PENDING if current[request.name] == "Ready" else READY
        current[request.name] = state["state"]
        for seen in (seen_row, seen_ws):
            seen.pop(request.pk, None)
        t0 = time.perf_counter()
        cluster.custom.patch_namespaced_custom_object_status(
            "kaito.sh",
            "v1beta1",
            NS,
            "workspaces",
            request.name,
            {"status": state},
            _content_type="application/merge-patch+json",
        )
        key = f"{request.name}/{state['state']}"
        deadline = t0 + 10
        while time.perf_counter() < deadline and not (key in seen_watch and request.pk in seen_ws):
            time.sleep(0.001)
        if key in seen_watch and request.pk in seen_row and request.pk in seen_ws:
            a.append(seen_watch[key] - t0)
            b.append(seen_row[request.pk] - t0)
            c.append(seen_ws[request.pk] - t0)
        seen_watch.pop(key, None)
    stop.set()
    reconciler.stop()
    print(f"samples: {len(c)} of {samples} complete")
    for label, values in (
        ("(a) plain kubernetes watch", a),
        ("(b) portal row committed", b),
        ("(c) WebSocket fragment received", c),
    ):
        print(
            f"{label:34s} p50 {percentile(values, 0.5) * 1000:7.1f} ms   p95 {percentile(values, 0.95) * 1000:7.1f} ms"
        )
    print(
        f"ratio (c)/(a): p50 {statistics.median(c) / statistics.median(a):.2f}x   "
        f"p95 {percentile(c, 0.95) / percentile(a, 0.95):.2f}x"
    )


if __name__ == "__main__":
    main()
