"""A stand-in for KAITO v0.12's workspace controller: plays each Workspace through KAITO's real status sequence."""

# It is NOT KAITO. It watches kaito.sh/v1beta1 Workspaces (all namespaces, optionally a label selector) and,
# step by step, writes what KAITO and the cluster around it would write: NodeClaim and GPU Node, Services,
# StatefulSet or Job, Pods with kubelet-like statuses, Events, Endpoints for the model, and the Workspace status
# computed with KAITO's own logic (devcluster/standin/kaito_logic.py). Scripted endings: annotation
# `kaito-portal.dev/standin-scenario` = quota, unschedulable, image-pull, oom, tuning-fails (crash).
# Everything it creates carries `kaito-portal.dev/played-by`.
#
# Run it: python -m devcluster.kaito_standin --kubeconfig PATH [--step-seconds 3] [--model-url http://10.255.0.1:5000]
#     [--kubelet 127.0.0.1:PORT] [--selector app.kubernetes.io/managed-by=kaito-portal]

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import signal
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config, watch

from devcluster.standin import manifests as m
from devcluster.standin.kaito_logic import FINALIZER
from devcluster.standin.kube import CUSTOM, Kube, Stopped
from devcluster.standin.plays import NAMESPACED, Gone, Play, Settings, cleanup, finalize

Obj = dict[str, Any]
log = logging.getLogger("kaito-standin")
BANNER = "kaito-standin: a STAND-IN for KAITO v0.12's workspace controller (not KAITO; see devcluster/kaito_standin.py)"


class KaitoStandin:
    """Threads: one list+watch loop, one player per Workspace, one short-lived janitor per deletion."""

    def __init__(
        self,
        api_factory: Callable[[], client.ApiClient],
        settings: Settings | None = None,
        *,
        selector: str = "",
        watch_timeout: int = 30,
    ) -> None:
        self.api_factory, self.settings, self.selector = api_factory, settings or Settings(), selector
        self.watch_timeout = watch_timeout
        self.stopping = threading.Event()
        self.api = api_factory()
        self.kube = Kube(self.api, self.stopping)
        self.players: dict[tuple[str, str], tuple[str, threading.Event, threading.Thread]] = {}
        self.lock = threading.Lock()
        self.janitors: set[tuple[tuple[str, str], str, str]] = set()
        self.relists = 0  # how many times the loop (re)listed: restarts and 410s show up here
        self._watch_api: client.ApiClient | None = None
        self._stream: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> KaitoStandin:
        log.info(BANNER)
        self._thread = threading.Thread(target=self._loop, name="kaito-standin-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        with self.lock:
            players = list(self.players.values())
        for _uid, cancel, _thread in players:
            cancel.set()
        response = getattr(self._stream, "_resp", None)
        if response is not None:  # a watch blocks until its next event: cut its socket (urllib3 >= 2.3)
            with contextlib.suppress(Exception):
                response.shutdown()
        for _uid, _cancel, thread in players:
            thread.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        self.api.close()
        log.info("kaito-standin stopped")

    def __enter__(self) -> KaitoStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- list + watch ----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        delay, version = 0.2, ""
        while not self.stopping.is_set():
            try:
                version = version or self._list()
                version = self._watch(version)  # a watch that ends normally is resumed from its last version
                delay = 0.2
                continue
            except Stopped:
                return
            except client.ApiException as err:
                version = ""
                if err.status == 410:  # our resourceVersion fell out of the watch window: list again
                    log.info("watch expired (410 Gone); relisting")
                    continue
                log.warning("API error %s: %s; relisting in %.1fs", err.status, err.reason, delay)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                version = ""
                if self.stopping.is_set():
                    return
                log.warning("API server unreachable (%s); relisting in %.1fs", type(err).__name__, delay)
            self.stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def _list(self) -> str:
        group, version, plural, _namespaced = CUSTOM["Workspace"]
        func = self.kube.apis["custom"].list_cluster_custom_object
        result = self.kube._call(func, group, version, plural, label_selector=self.selector)
        items = result.get("items", [])
        self.relists += 1
        seen = set()
        for ws in items:
            seen.add((ws["metadata"]["namespace"], ws["metadata"]["name"]))
            self._handle("ADDED", ws)
        with self.lock:
            vanished = [key for key in self.players if key not in seen]
        for key in vanished:  # deleted while we were not watching
            self._handle("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        self._sweep_orphans()
        return str(result["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        group, api_version, plural, _namespaced = CUSTOM["Workspace"]
        self._watch_api = self.api_factory()
        stream = self._stream = watch.Watch()
        try:
            for event in stream.stream(
                client.CustomObjectsApi(self._watch_api).list_cluster_custom_object, group, api_version, plural,
                label_selector=self.selector, resource_version=version, timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True, _request_timeout=self.watch_timeout + 10,
            ):  # fmt: skip
                if self.stopping.is_set():
                    raise Stopped
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._handle(event["type"], event["raw_object"])
        finally:
            stream.stop()
            self._watch_api.close()
        return str(stream.resource_version or version)

    # --- per Workspace -----------------------------------------------------------------------------------------
    def _handle(self, kind: str, ws: Obj) -> None:
        key = (ws["metadata"]["namespace"], ws["metadata"]["name"])
        uid = ws["metadata"].get("uid", "")
        if kind == "DELETED" or ws["metadata"].get("deletionTimestamp"):
            mine = FINALIZER in (ws["metadata"].get("finalizers") or [])
            with self.lock:
                player = self.players.pop(key, None)
                if (kind != "DELETED" and not mine) or (key, uid, kind) in self.janitors:
                    return  # another finalizer holds it, or a janitor already works on it
                self.janitors.add((key, uid, kind))
            self._spawn(f"janitor {key[0]}/{key[1]}", self._delete, player, None if kind == "DELETED" else ws, key, uid)
            return
        if self.stopping.is_set():
            return
        with self.lock:
            current = self.players.get(key)
            if current and current[0] == uid and current[2].is_alive():
                return
            cancel = threading.Event()
            thread = self._spawn(f"play {key[0]}/{key[1]}", self._play, ws, cancel, start=False)
            self.players[key] = (uid, cancel, thread)
            thread.start()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any, start: bool = True) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        if start:
            thread.start()
        return thread

    def _play(self, ws: Obj, cancel: threading.Event) -> None:
        try:
            Play(Kube(self.api, cancel), ws, self.settings).run()
        except (Gone, Stopped):
            pass
        except Exception:
            log.exception("%s/%s: the play failed", ws["metadata"]["namespace"], ws["metadata"]["name"])

    def _delete(
        self,
        player: tuple[str, threading.Event, threading.Thread] | None,
        ws: Obj | None,
        key: tuple[str, str],
        uid: str = "",
    ) -> None:
        if player:
            player[1].set()
            player[2].join(30)  # the play must not create objects (or start a model) after the cleanup
        try:
            if self.settings.models is not None:  # its pod goes, and the model server with it
                self.settings.models.release(*key, uid or (player[0] if player else ""))
            count = finalize(self.kube, ws) if ws else cleanup(self.kube, *key)
            log.info("%s/%s deleted: removed %d objects%s", *key, count, " and KAITO's finalizer" if ws else "")
        except Stopped:
            pass
        except Exception:
            log.exception("%s/%s: cleanup failed", *key)

    def _sweep_orphans(self) -> None:
        """Objects whose Workspace is gone (deleted while the stand-in was down): nothing else would remove them."""
        selector = f"{m.PLAYED_BY}={m.STANDIN},{m.WS_LABEL},{m.WS_NS_LABEL}"
        owners = set()
        for kind in (*NAMESPACED, "Node", "NodeClaim"):
            for obj in self.kube.list(kind, None, selector):
                labels = obj["metadata"]["labels"]
                owners.add((labels[m.WS_NS_LABEL], labels[m.WS_LABEL]))
        for ns, name in owners:
            if self.kube.read("Workspace", ns, name) is None:
                log.info("%s/%s no longer exists: removed %d orphaned objects", ns, name, cleanup(self.kube, ns, name))


def parse_model_url(url: str) -> tuple[str, int]:
    """http://IP:PORT of the model stand-in -> (IP, PORT); the apiserver dials this address."""
    parts = urllib.parse.urlsplit(url)
    host = "127.0.0.1" if parts.hostname == "localhost" else (parts.hostname or "")
    ipaddress.ip_address(host)  # Endpoints need an IP literal
    return host, parts.port or 5000


def parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    ipaddress.ip_address(host)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.kaito_standin", description=BANNER)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--step-seconds", type=float, default=3.0, help="pause between steps (default 3)")
    parser.add_argument("--training-steps", type=int, default=4, help="steps a tuning container runs (default 4)")
    parser.add_argument("--model-url", default="", help="model stand-in the Service's Endpoints point at")
    parser.add_argument("--kubelet", default="", help="IP:PORT of the kubelet stand-in the fake Nodes point at")
    parser.add_argument("--selector", default="", help="only Workspaces with these labels")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s [kaito-standin] %(message)s"
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    settings = Settings(
        step_seconds=args.step_seconds,
        training_steps=args.training_steps,
        model_endpoint=parse_model_url(args.model_url) if args.model_url else None,
        kubelet=parse_hostport(args.kubelet) if args.kubelet else None,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    standin = KaitoStandin(
        lambda: config.new_client_from_config(config_file=args.kubeconfig), settings, selector=args.selector
    ).start()
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
