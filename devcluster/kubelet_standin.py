"""A kubelet stand-in that serves `GET /containerLogs/<ns>/<pod>/<container>` over TLS, so `pods/log` works for real."""

# The apiserver proxies `GET /api/v1/namespaces/<ns>/pods/<pod>/log` to `https://<node InternalIP>:<daemonEndpoints
# .kubeletEndpoint.Port>/containerLogs/...` with tailLines, follow, timestamps, sinceSeconds, sinceTime, limitBytes
# passed through (k8s.io/kubernetes v1.34.4 pkg/registry/core/pod/strategy.go LogLocation). It does not refuse loopback
# node addresses (only nodes/proxy does, node/strategy.go isProxyableHostname), and without
# --kubelet-certificate-authority it does not verify the kubelet's certificate. This server reads the pod from the API
# and answers with deterministic logs (devcluster/standin/logs.py) that grow from the container's start; errors are
# worded like the kubelet's (pkg/kubelet/server/server.go getContainerLogs, kubelet_pods.go validateContainerLogStatus).
#
# Run it: python -m devcluster.kubelet_standin --kubeconfig PATH [--host 127.0.0.1] [--port 10250] [--line-seconds 1]

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import signal
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from kubernetes import client, config

from devcluster import pki
from devcluster.standin import logs
from devcluster.standin.manifests import WS_LABEL

Obj = dict[str, Any]
BANNER = "kubelet-standin: a STAND-IN kubelet serving container logs only (see devcluster/kubelet_standin.py)"


def serving_context(host: str, ca_dir: Path | None = None) -> ssl.SSLContext:
    """TLS for host: issued by the control plane's CA (ca_dir/ca.crt + ca.key) if given, else self-signed."""
    key = pki.new_key()
    name = pki.x509_name("kubelet-standin")
    issuer_name, issuer_key = name, key
    if ca_dir is not None:
        ca, issuer_key = pki.load_ca(ca_dir / "ca.crt", ca_dir / "ca.key")
        issuer_name = ca.subject
    cert = (
        pki.builder(name, issuer_name, key.public_key(), dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(pki.local_sans(host)), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain wants files; they live only for this call
        cert_file, key_file = pki.write_cert(Path(tmp) / "tls.crt", cert), pki.write_key(Path(tmp) / "tls.key", key)
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _specs(pod: Obj) -> list[Obj]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"].get("containers", [])]


def _status(pod: Obj, name: str) -> Obj | None:
    statuses = [
        *pod.get("status", {}).get("initContainerStatuses", []),
        *pod.get("status", {}).get("containerStatuses", []),
    ]
    return next((cs for cs in statuses if cs["name"] == name), None)


def not_loggable(pod: Obj, name: str) -> str:
    """validateContainerLogStatus: why the kubelet has no log to show yet, or "" when it has one."""
    cs, pod_name = _status(pod, name), pod["metadata"]["name"]
    if cs is None:
        return f'container "{name}" in pod "{pod_name}" is not available'
    state, last = cs.get("state", {}), cs.get("lastState", {})
    if "running" in state or "terminated" in state or "terminated" in last:
        return ""
    reason = (state.get("waiting") or {}).get("reason", "")
    if reason == "ErrImagePull":
        return f'container "{name}" in pod "{pod_name}" is waiting to start: image can\'t be pulled'
    if reason == "ImagePullBackOff":
        return f'container "{name}" in pod "{pod_name}" is waiting to start: trying and failing to pull image'
    if reason:
        return f'container "{name}" in pod "{pod_name}" is waiting to start: {reason}'
    return f'container "{name}" in pod "{pod_name}" is waiting to start - no logs yet'


def run_of(pod: Obj, name: str) -> tuple[dt.datetime, dt.datetime | None, str]:
    """(started, ended, outcome) of the container's current or last run; outcome: running, ok, error, killed."""
    cs = _status(pod, name) or {}
    state = cs.get("state", {})
    term = state.get("terminated") or (cs.get("lastState", {}).get("terminated") if "running" not in state else None)
    if term:
        outcome = "ok" if term.get("exitCode") == 0 else "killed" if term.get("reason") == "OOMKilled" else "error"
        started = _time(term.get("startedAt")) or dt.datetime.now(dt.UTC)
        return started, _time(term.get("finishedAt")), outcome
    started = _time(state.get("running", {}).get("startedAt")) or dt.datetime.now(dt.UTC)
    if cs.get("ready") and "job-name" not in pod["metadata"].get("labels", {}):
        ready = next((c for c in pod["status"].get("conditions", []) if c["type"] == "Ready"), {})
        return started, _time(ready.get("lastTransitionTime")) or started, "ok"  # vLLM up: the start-up log is done
    return started, None, "running"


def script_for(pod: Obj, name: str, gpu_product: str) -> logs.Script:
    spec = next(c for c in _specs(pod) if c["name"] == name)
    labels, namespace = pod["metadata"].get("labels", {}), pod["metadata"]["namespace"]
    argv = [*spec.get("command", []), *spec.get("args", [])]
    if name == "pusher":
        return logs.pusher(spec.get("args", ["", "adapter"])[-1], pod["metadata"]["name"])
    if name == "model-weights-downloader":
        return logs.oras_pull(argv[2] if len(argv) > 2 else "weights")
    if name == "data-downloader":
        return logs.data_downloader(spec.get("args", []))
    if name == "puller":
        return logs.skopeo(spec.get("args", ["image"])[0])
    if name != labels.get(WS_LABEL):
        return logs.Script([])
    if "job-name" in labels:
        return logs.fine_tuning(f"{namespace}/{pod['metadata']['name']}")
    words = " ".join(argv).split()
    model = words[words.index("--model") + 1] if "--model" in words else "model"
    gpus = int(spec.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", "1"))
    perf = logs.performance(namespace, labels[WS_LABEL], gpu_product, gpus)
    return logs.vllm(model, perf, run_of(pod, name)[1] or dt.datetime.now(dt.UTC))


class KubeletStandin:
    """aiohttp server; `async with` runs it on the current loop, `with` in a background thread."""

    def __init__(
        self,
        api_factory: Callable[[], client.ApiClient],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        line_seconds: float = 1.0,
        poll_seconds: float = 0.5,
        ca_dir: Path | None = None,
    ) -> None:
        self.api = api_factory()
        self.core = client.CoreV1Api(self.api)
        self.host, self.port, self.line_seconds, self.poll_seconds = host, port, line_seconds, poll_seconds
        self.ssl_context = serving_context(host, ca_dir)
        self.requests: list[str] = []  # paths+queries as the apiserver sent them (tests check the pass-through)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not ipaddress.ip_address(self.host).is_loopback:  # an extra address on lo: accept nothing from outside
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            await asyncio.sleep(0.1)  # let closing TLS transports finish before the loop goes away

    def __enter__(self) -> KubeletStandin:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubelet-standin", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
        self.api.close()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _get(self, func: Callable[..., Any], *args: Any) -> Obj | None:
        try:
            found = await asyncio.to_thread(func, *args, _request_timeout=10)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return self.api.sanitize_for_serialization(found)  # type: ignore[no-any-return]

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        namespace, pod_name, name = (request.match_info[k] for k in ("namespace", "pod", "container"))
        query = request.query
        try:
            tail_text = query.get("tailLines", query.get("tail", ""))
            tail = None if tail_text in ("", "all") else int(tail_text)
            since = int(query["sinceSeconds"]) if "sinceSeconds" in query else None
            since_time = _time(query.get("sinceTime"))
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
        except ValueError:
            return web.Response(status=400, text='{"message": "Unable to decode query."}')
        pod = await self._get(self.core.read_namespaced_pod, pod_name, namespace)
        if pod is None:
            return web.Response(status=404, text=f'pod "{pod_name}" does not exist')
        if not any(c["name"] == name for c in _specs(pod)):
            return web.Response(status=404, text=f'container "{name}" not found in pod "{pod_name}"')
        if query.get("previous") == "true":
            return web.Response(
                status=400, text=f'previous terminated container "{name}" in pod "{pod_name}" not found'
            )
        problem = not_loggable(pod, name)
        if problem:
            return web.Response(status=400, text=problem)
        node = await self._get(self.core.read_node, pod["spec"]["nodeName"]) if pod["spec"].get("nodeName") else None
        product = ((node or {}).get("metadata", {}).get("labels") or {}).get("nvidia.com/gpu.product", "")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        after = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=since) if since is not None else since_time
        stamps, follow = query.get("timestamps") == "true", query.get("follow") == "true"
        lines = self._lines(pod, name, product, after)
        chunk, limit = self._render(lines[max(len(lines) - tail, 0) :] if tail is not None else lines, stamps, limit)
        await response.write(chunk)
        written = len(lines)  # lines only ever get appended, so the count is the position to continue from
        while follow and limit != 0 and "running" in (_status(pod, name) or {}).get("state", {}):
            await asyncio.sleep(self.poll_seconds)
            fresh = await self._get(self.core.read_namespaced_pod, pod_name, namespace)
            if fresh is None or fresh["metadata"].get("uid") != pod["metadata"].get("uid"):
                break  # the pod is gone: the kubelet ends the stream
            pod, lines = fresh, self._lines(fresh, name, product, after)
            chunk, limit = self._render(lines[written:], stamps, limit)
            if chunk:
                await response.write(chunk)
            written = len(lines)
        await response.write_eof()
        return response

    def _lines(self, pod: Obj, name: str, product: str, after: dt.datetime | None) -> list[tuple[dt.datetime, str]]:
        started, ended, outcome = run_of(pod, name)
        script = script_for(pod, name, product)
        out = logs.visible(script, started, ended, outcome, dt.datetime.now(dt.UTC), self.line_seconds)
        return [(t, line) for t, line in out if after is None or t >= after]

    @staticmethod
    def _render(lines: list[tuple[dt.datetime, str]], stamps: bool, budget: int | None) -> tuple[bytes, int | None]:
        data = "".join(f"{logs.rfc3339nano(t) + ' ' if stamps else ''}{line}\n" for t, line in lines).encode()
        if budget is None:
            return data, None
        return data[:budget], max(budget - len(data), 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.kubelet_standin", description=BANNER)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address the fake Nodes advertise as InternalIP")
    parser.add_argument("--port", type=int, default=10250, help="0 picks a free port (printed)")
    parser.add_argument("--line-seconds", type=float, default=1.0, help="a new log line every N seconds")
    parser.add_argument("--ca-dir", type=Path, default=None, help="sign the serving cert with DIR/ca.crt + ca.key")
    args = parser.parse_args(argv)
    standin = KubeletStandin(
        lambda: config.new_client_from_config(config_file=args.kubeconfig),
        host=args.host, port=args.port, line_seconds=args.line_seconds, ca_dir=args.ca_dir,
    )  # fmt: skip

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await standin.start()
        print(f"{BANNER}; listening on https://{standin.host}:{standin.port}", flush=True)
        await stop.wait()
        await standin.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    standin.api.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
