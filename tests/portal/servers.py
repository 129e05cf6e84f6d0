"""Run the portal's real processes (daphne, manage.py) in subprocesses with a clean environment."""

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from devcluster.procs import stop_child

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra):
    """Only what a process needs: no DATABASE_URL, REDIS_URL, KUBECONFIG or DJANGO_* leaking from the test run."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    env["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(*args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer to check, never followed (it may name an outside host)


_opener = urllib.request.build_opener(_NoRedirect)


def http_get(url, headers=None, timeout=10):
    """(status, body, headers: case-insensitive) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


@contextlib.contextmanager
def running(cmd, env, *, port, ready_path="/healthz", timeout=60, cwd=ROOT):
    """Start a server, wait until ready_path answers; afterwards SIGTERM it and hand back its output and exit code."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:  # pipes could fill and block
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        result = {}
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    err.seek(0)
                    raise AssertionError(f"{cmd} exited {proc.returncode}: {err.read()[-3000:]}")
                with contextlib.suppress(OSError):
                    if http_get(f"http://127.0.0.1:{port}{ready_path}", timeout=2)[0] < 500:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{cmd} did not answer {ready_path} within {timeout}s")
                time.sleep(0.2)
            yield result
        finally:
            stop_child(proc, timeout=20)
            out.seek(0)
            err.seek(0)
            result.update(stdout=out.read(), stderr=err.read(), returncode=proc.returncode)


def daphne(port, env):
    cmd = [sys.executable, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port), "portal.asgi:application"]
    return running(cmd, env, port=port)
