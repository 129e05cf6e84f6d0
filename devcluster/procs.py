"""Child-process helpers: spawn in own process group, die with the parent, stop the whole group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded in the parent: the forked child must not import anything


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """Return a preexec_fn asking the kernel to SIGKILL the child when its parent thread exits."""

    def preexec() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def spawn(cmd: list[str], log_path: Path, *, detached: bool) -> subprocess.Popen[bytes]:
    """Start cmd in a new session (own process group) with stdout+stderr appended to log_path.

    Attached children get PR_SET_PDEATHSIG: if this Python process is killed, even with SIGKILL, they
    die too. The signal is tied to the *thread* that forks, so start control planes from the main
    thread (pytest does). Detached children (the sandbox) survive the CLI that started them.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not them; we stop them in order
            preexec_fn=None if detached else _die_with_parent(os.getpid()),
            close_fds=True,
        )


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def pid_cmdline(pid: int) -> list[str]:
    """Return the argv of pid, or [] if it is gone (used to avoid signalling a reused pid)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_pid(
    pid: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None, sig: int = signal.SIGTERM
) -> None:
    """Signal the process group led by pid (SIGTERM), SIGKILL it after timeout, reap it if it is our child."""
    _signal_group(pid, sig)  # spawn() made every child a session (and group) leader
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        _signal_group(pid, signal.SIGKILL)
    _signal_group(pid, signal.SIGKILL)  # leftovers in the group, if any
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    else:
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM one child process (not its group), SIGKILL it if it is still there after timeout; reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 (the caller retries if someone takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like Go's listeners: connections of a stopped server in TIME_WAIT must not count as "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tail(path: Path, lines: int = 40) -> str:
    """Return the last lines of a log file, for error messages."""
    try:
        data = path.read_bytes()[-64_000:]
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
