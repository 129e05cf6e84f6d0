"""Watches on Workspaces: live events, resuming from a resourceVersion, 410 Gone, apiserver restarts."""

import threading
import time

import pytest
from kubernetes import client, watch

from devcluster.controlplane import ControlPlane
from devcluster.crds import CRD_DIR
from tests.devcluster.conftest import GROUP, PLURAL, VERSION, workspace

pytestmark = pytest.mark.cluster


def _events(custom, ns, rv, timeout=5, until=None):
    """Collect (type, name, resourceVersion) from a watch starting after rv, until `until` returns True."""
    seen = []
    w = watch.Watch()
    for ev in w.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, resource_version=rv, timeout_seconds=timeout
    ):
        meta = ev["raw_object"]["metadata"]
        seen.append((ev["type"], meta["name"], meta["resourceVersion"]))
        if until and until(seen):
            w.stop()
    return seen


def test_live_events_arrive(custom, k8s_namespace):
    ns = k8s_namespace
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["metadata"]["resourceVersion"]

    def writer():
        time.sleep(0.5)  # after the watch below is open
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("live"))
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "live", {"status": {"state": "Ready"}})
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "live")

    t = threading.Thread(target=writer)
    t.start()
    started = time.monotonic()
    seen = _events(custom, ns, rv, timeout=20, until=lambda s: s[-1][0] == "DELETED")
    t.join()
    assert [(typ, name) for typ, name, _ in seen] == [("ADDED", "live"), ("MODIFIED", "live"), ("DELETED", "live")]
    assert time.monotonic() - started < 10  # pushed as they happen, not at the timeout
    rvs = [int(r) for _, _, r in seen]
    assert rvs == sorted(rvs)


def test_watch_resumes_from_a_resource_version(custom, k8s_namespace):
    ns = k8s_namespace
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("resume"))
    rv_created = created["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "resume", {"metadata": {"labels": {"n": "1"}}})
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "resume", {"metadata": {"labels": {"n": "2"}}})

    # From the creation's resourceVersion: exactly the two later changes, nothing before.
    seen = _events(custom, ns, rv_created, until=lambda s: len(s) == 2)
    assert [typ for typ, _, _ in seen] == ["MODIFIED", "MODIFIED"]
    # From the first patch's resourceVersion: only the second patch.
    assert [typ for typ, _, _ in _events(custom, ns, seen[0][2], until=lambda s: len(s) == 1)] == ["MODIFIED"]
    # From the newest resourceVersion: nothing (the watch times out empty).
    assert _events(custom, ns, seen[1][2], timeout=2) == []


def test_watch_from_compacted_resource_version_is_gone(control_plane, custom, k8s_namespace):
    ns = k8s_namespace
    old = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("old"))
    old_rv = old["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "old", {"metadata": {"labels": {"n": "1"}}})
    control_plane.compact_etcd()
    # Compaction alone: the watch cache still holds the recent window and serves it.
    assert [typ for typ, _, _ in _events(custom, ns, old_rv, until=lambda s: True)] == ["MODIFIED"]

    revision = control_plane.expire_watch_history()  # compaction + a fresh watch cache
    assert revision > int(old_rv)
    with pytest.raises(client.ApiException) as gone:
        _events(custom, ns, old_rv)
    assert gone.value.status == 410
    assert f"too old resource version: {old_rv}" in str(gone.value.reason)
    # The recovery every watcher needs: list again and watch from the list's resourceVersion.
    lst = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    assert [i["metadata"]["labels"] for i in lst["items"]] == [{"n": "1"}]
    assert _events(custom, ns, lst["metadata"]["resourceVersion"], timeout=1) == []


def test_without_watch_cache_compaction_alone_gives_410():
    """With --watch-cache=false etcd serves watches itself: a compacted revision is 410 at once."""
    crds = [CRD_DIR / "kaito.sh_workspaces.yaml"]
    with ControlPlane(watch_cache=False, crd_files=crds) as plane, plane.api_client() as api:
        custom = client.CustomObjectsApi(api)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "nocache"}})
        created = custom.create_namespaced_custom_object(GROUP, VERSION, "nocache", PLURAL, workspace("w"))
        old_rv = created["metadata"]["resourceVersion"]
        for n in ("1", "2"):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, "nocache", PLURAL, "w", {"metadata": {"labels": {"n": n}}}
            )
        assert [typ for typ, _, _ in _events(custom, "nocache", old_rv, until=lambda s: len(s) == 2)] == [
            "MODIFIED",
            "MODIFIED",
        ]
        # Compact past old_rv + 1 (a watch from old_rv starts at old_rv + 1; at exactly the compaction
        # revision etcd lacks the previous value and the apiserver answers 500, see the README).
        assert plane.compact_etcd() > int(old_rv) + 1
        with pytest.raises(client.ApiException) as gone:
            _events(custom, "nocache", old_rv)
        assert gone.value.status == 410
        assert "The resourceVersion for the provided watch is too old." in str(gone.value.reason)


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "crash"])
def test_apiserver_restart_ends_the_watch_and_the_client_resumes(
    control_plane, k8s_api_client, custom, k8s_namespace, graceful
):
    ns = k8s_namespace
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("before"))

    seen, ended, errors = [], threading.Event(), []
    first_event = threading.Event()

    def consume():
        try:
            for ev in watch.Watch().stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                PLURAL,
                resource_version=rv,
                timeout_seconds=120,
            ):
                seen.append(
                    (ev["type"], ev["raw_object"]["metadata"]["name"], ev["raw_object"]["metadata"]["resourceVersion"])
                )
                first_event.set()
        except Exception as err:  # a reset connection is an acceptable way for the stream to end
            errors.append(err)
        finally:
            ended.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    assert first_event.wait(10)
    # Any write anywhere moves etcd's revision past the watcher's last resourceVersion (a real cluster
    # writes all the time; a ConfigMap makes it certain here).
    client.CoreV1Api(k8s_api_client).create_namespaced_config_map(ns, {"metadata": {"name": "bump"}})
    control_plane.restart_apiserver(graceful=graceful)
    assert ended.wait(30), "the watch stream did not end when the apiserver stopped"
    if graceful:
        assert errors == []  # the apiserver closed the stream cleanly
    else:
        assert [type(e).__name__ for e in errors] == ["ProtocolError"]  # connection broken mid-stream
    assert [(typ, name) for typ, name, _ in seen] == [("ADDED", "before")]
    last_rv = seen[-1][2]

    after = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("after"))
    # The new apiserver's watch cache starts at the revision of its initial list, so resuming from a
    # resourceVersion older than that is 410 Gone (as after a real apiserver restart)...
    with pytest.raises(client.ApiException) as gone:
        _events(custom, ns, last_rv)
    assert gone.value.status == 410
    assert f"too old resource version: {last_rv}" in str(gone.value.reason)
    # ...so the client relists (nothing was lost) and watches from the list's resourceVersion.
    lst = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    assert sorted(i["metadata"]["name"] for i in lst["items"]) == ["after", "before"]
    assert int(lst["metadata"]["resourceVersion"]) >= int(after["metadata"]["resourceVersion"])
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "after", {"metadata": {"labels": {"n": "1"}}})
    # A change made after the restart reaches the re-established watch.
    later = _events(custom, ns, lst["metadata"]["resourceVersion"], until=lambda s: True)
    assert [(typ, name) for typ, name, _ in later] == [("MODIFIED", "after")]
