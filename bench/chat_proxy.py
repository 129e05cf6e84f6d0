"""Chat proxy: time to first token and tokens/s through the portal (WebSocket, OpenAI API) vs. the model directly."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from websockets.asyncio.client import connect as ws_connect

# Three processes on 127.0.0.1: the model stand-in (devcluster.model_standin, its own process), the portal under
# Daphne (the production ASGI server) with the stand-in behind KAITO_INFERENCE_URL and a fresh SQLite database,
# and this client. For 1, 50 and 200 concurrent streams it measures, per stream, the time from sending the
# request to the first answer token and the token rate after it, for
#
#     direct  POST /v1/chat/completions (stream) to the stand-in      the baseline
#     api     the same through /api/workspaces/<id>/v1 (API token)    the byte relay
#     ws      the chat page's WebSocket (session cookie)              the HTML-fragment path, conversation stored
#
# and prints medians, p95 and the ratios portal/direct, with error counts. Run: python bench/chat_proxy.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devcluster.procs import free_port, stop_child  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="kaito-chat-bench-"))
DB_URL = f"sqlite:///{WORK / 'bench.sqlite3'}"
MODEL = "phi-3-mini-128k-instruct"
# About 90 answer tokens: the stand-in echoes the prompt inside its answer.
PROMPT = " ".join(f"word{i}" for i in range(60))
WORDS = re.compile(r"\S+\s*")  # the stand-in's tokens: a word and the whitespace after it


def setup_database() -> tuple[int, str, str]:
    """Migrate a fresh SQLite file; a user in a team with one READY workspace, an API token and a session."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    os.environ["DATABASE_URL"] = DB_URL
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from catalog.models import Preset
    from portal.services import token_create
    from workspaces.models import Membership, Status, Team, WorkspaceRequest

    call_command("migrate", verbosity=0)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the table
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bench", password="bench-pw-123")
    team = Team.objects.create(name="Bench", slug="bench", namespace="bench")
    Membership.objects.create(team=team, user=user)
    preset = Preset.objects.create(name="microsoft/Phi-3-mini-128k-instruct", served_name=MODEL, source="bench")
    workspace = WorkspaceRequest.objects.create(
        team=team, requester=user, kind="inference", name="bench", namespace="bench", preset=preset, hours=1,
        status=Status.READY, chat_protocol="openai",
    )  # fmt: skip
    raw = token_create(user=user, name="bench")[1]
    client = Client()
    client.force_login(user)
    return workspace.pk, raw, client.cookies["sessionid"].value


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], ready_url: str, log: Path):
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_http(ready_url)
            yield proc
        finally:
            stop_child(proc)


@dataclass
class Stream:
    ttft: float | None = None  # seconds from sending to the first answer token
    rate: float | None = None  # tokens per second after the first one
    tokens: int = 0
    error: str = ""


@dataclass
class Result:
    streams: list[Stream] = field(default_factory=list)
    wall: float = 0.0

    def ok(self) -> list[Stream]:
        return [s for s in self.streams if not s.error and s.ttft is not None]

    def errors(self) -> int:
        return len(self.streams) - len(self.ok())


def _finish(stream: Stream, sent: float, first: float | None, last: float | None) -> Stream:
    if first is not None:
        stream.ttft = first - sent
        if last is not None and last > first and stream.tokens > 1:
            stream.rate = (stream.tokens - 1) / (last - first)
    return stream


async def sse_stream(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Stream:
    stream, first, last = Stream(), None, None
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    sent = time.perf_counter()
    try:
        async with http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                stream.error = f"HTTP {response.status_code}"
                return stream
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    stream.error = data["error"].get("type", "error")
                    break
                if any((c.get("delta") or {}).get("content") for c in data.get("choices") or ()):
                    last = time.perf_counter()
                    first = first or last
                    stream.tokens += 1
    except (httpx.HTTPError, ValueError) as exc:
        stream.error = type(exc).__name__
    return _finish(stream, sent, first, last)


async def ws_stream(url: str, origin: str, cookie: str, start: asyncio.Event) -> Stream:
    stream, first, last = Stream(), None, None
    message = json.dumps({"prompt": PROMPT, "model": MODEL, "conversation": "", "system_prompt": "",
                          "temperature": "0.7", "top_p": "1", "max_tokens": "512", "action": "send"})  # fmt: skip
    try:
        async with ws_connect(url, origin=origin, additional_headers={"Cookie": cookie}, open_timeout=60,
                              max_queue=None) as socket_:  # fmt: skip
            await asyncio.wait_for(socket_.recv(), 60)  # the model picker: the socket is set up
            await start.wait()
            sent = time.perf_counter()
            await socket_.send(message)
            while True:
                frame = await asyncio.wait_for(socket_.recv(), 60)
                if frame.startswith('<span hx-swap-oob="beforeend:#reply-'):
                    last = time.perf_counter()
                    first = first or last
                    # Tokens that queued up while the portal was busy share a fragment: count the words.
                    stream.tokens += len(WORDS.findall(html.unescape(frame[frame.index(">") + 1 : -7])))
                elif frame.lstrip().startswith("<article"):
                    if "msg-error" in frame:
                        stream.error = "answer failed"
                    break
                elif 'id="chat-notice"' in frame and "note" in frame:
                    stream.error = "refused"
                    break
    except (OSError, TimeoutError, ValueError) as exc:
        stream.error = type(exc).__name__
        return stream
    return _finish(stream, sent, first, last)


async def run_level(mode: str, n: int, *, direct: str, portal: str, pk: int, token: str, cookie: str) -> Result:
    result = Result()
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=30), limits=limits) as http:
        began = time.perf_counter()
        if mode == "direct":
            jobs = [sse_stream(http, f"{direct}/v1/chat/completions", {}) for _ in range(n)]
        elif mode == "api":
            url = f"{portal}/api/workspaces/{pk}/v1/chat/completions"
            jobs = [sse_stream(http, url, {"Authorization": f"Bearer {token}"}) for _ in range(n)]
        else:
            start = asyncio.Event()
            url = portal.replace("http://", "ws://") + f"/ws/chat/{pk}/"
            tasks = [asyncio.create_task(ws_stream(url, portal, f"sessionid={cookie}", start)) for _ in range(n)]
            await asyncio.sleep(0.5 + n * 0.02)  # every socket connected and set up before the clock runs
            began = time.perf_counter()
            start.set()
            jobs = tasks
        result.streams = list(await asyncio.gather(*jobs))
        result.wall = time.perf_counter() - began
    return result


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def summary(result: Result) -> dict[str, float]:
    ok = result.ok()
    ttft = [s.ttft * 1000 for s in ok if s.ttft is not None]
    rates = [s.rate for s in ok if s.rate is not None]
    return {
        "ttft_p50": statistics.median(ttft) if ttft else float("nan"),
        "ttft_p95": p(ttft, 0.95),
        "rate_p50": statistics.median(rates) if rates else float("nan"),
        "throughput": sum(s.tokens for s in ok) / result.wall if result.wall else float("nan"),
        "errors": result.errors(),
        "kinds": ", ".join(sorted({s.error for s in result.streams if s.error})),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,50,200", help="concurrent streams per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per level (1 stream: this many x 5)")
    parser.add_argument("--modes", default="direct,api,ws", help="which paths to measure")
    parser.add_argument("--backlog", type=int, default=0, help="daphne's listen backlog (0: Twisted's default, 50)")
    parser.add_argument("--token-delay", type=float, default=0.02, help="the stand-in's seconds per token")
    args = parser.parse_args()
    pk, token, cookie = setup_database()
    model_port, portal_port = free_port(), free_port()
    direct, portal = f"http://127.0.0.1:{model_port}", f"http://127.0.0.1:{portal_port}"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    portal_env = {**env, "DATABASE_URL": DB_URL, "KAITO_INFERENCE_URL": direct, "PORTAL_CHAT_RATE_PER_MINUTE": "0",
                  "PORTAL_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "portal.settings"}  # fmt: skip
    standin_cmd = [sys.executable, "-m", "devcluster.model_standin", "--port", str(model_port),
                   "--token-delay", str(args.token_delay)]  # fmt: skip
    # Twisted listens with a backlog of 50 unless told otherwise: 200 simultaneous connects then see resets.
    endpoint = f"tcp:port={portal_port}:interface=127.0.0.1" + (f":backlog={args.backlog}" if args.backlog else "")
    daphne_cmd = [sys.executable, "-m", "daphne", "-e", endpoint, "portal.asgi:application"]
    print(f"# chat proxy bench {time.strftime('%Y-%m-%d %H:%M')} | {platform.node()} | {os.cpu_count()} cores | "
          f"{platform.processor() or platform.machine()} | Python {platform.python_version()} | token delay "
          f"{args.token_delay * 1000:g} ms | prompt {len(PROMPT.split())} words | "
          f"daphne backlog {args.backlog or 50}")  # fmt: skip
    with (
        process(standin_cmd, env, f"{direct}/health", WORK / "standin.log"),
        process(daphne_cmd, portal_env, f"{portal}/healthz", WORK / "daphne.log"),
    ):
        table = []
        for n in (int(x) for x in args.levels.split(",")):
            rounds = args.rounds * 5 if n == 1 else args.rounds
            for mode in args.modes.split(","):
                merged = Result()
                for _ in range(rounds):
                    r = asyncio.run(run_level(mode, n, direct=direct, portal=portal, pk=pk, token=token, cookie=cookie))
                    merged.streams += r.streams
                    merged.wall += r.wall
                table.append((n, mode, summary(merged), len(merged.streams)))
        print(f"{'streams':>7} {'path':>6} {'n':>5} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'tok/s p50':>10} "
              f"{'tok/s all':>10} {'errors':>6} {'TTFT ratio':>10} {'tok/s ratio':>11}")  # fmt: skip
        base: dict[int, dict[str, float]] = {}
        for n, mode, s, count in table:
            if mode == "direct" or n not in base:
                base[n] = s
            ttft_ratio = s["ttft_p50"] / base[n]["ttft_p50"]
            rate_ratio = s["rate_p50"] / base[n]["rate_p50"]
            print(f"{n:>7} {mode:>6} {count:>5} {s['ttft_p50']:>12.1f} {s['ttft_p95']:>12.1f} {s['rate_p50']:>10.1f} "
                  f"{s['throughput']:>10.0f} {s['errors']:>6} {ttft_ratio:>10.2f} {rate_ratio:>11.2f} "
                  f"{s['kinds']}")  # fmt: skip
    print(f"# logs and database in {WORK}")


if __name__ == "__main__":
    main()
