"""Stop attached control planes when Python exits, on SIGTERM/SIGHUP, and sweep orphaned temp folders."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Protocol

from devcluster import procs

TEMP_PREFIX = "kaito-devcluster-"


class Stoppable(Protocol):
    """Anything with an idempotent stop()."""

    def stop(self) -> None: ...


_LIVE: list[Stoppable] = []
_HOOKS_INSTALLED = False


def register(obj: Stoppable) -> None:
    """Stop obj at interpreter exit or on SIGTERM/SIGHUP unless it was stopped before."""
    if obj not in _LIVE:
        _LIVE.append(obj)
    _install_hooks()


def unregister(obj: Stoppable) -> None:
    """Forget obj (it stopped by itself)."""
    if obj in _LIVE:
        _LIVE.remove(obj)


def stop_all() -> None:
    """Stop every registered object, newest first."""
    for obj in reversed(list(_LIVE)):
        obj.stop()


def _install_hooks() -> None:
    # SIGINT needs no handler: it raises KeyboardInterrupt, so finally blocks and atexit run.
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit and PDEATHSIG remain
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) not in (signal.SIG_DFL, None):
            continue  # the application owns this signal

        def handler(signum: int, frame: FrameType | None) -> None:
            stop_all()
            # Unwind like Ctrl-C: pytest ends the session (SystemExit would only fail one test).
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(sig, handler)


def new_tempdir() -> Path:
    """A temp folder whose name carries our pid, so a later run can tell when its owner is dead."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))


def remove_stale_tempdirs() -> None:
    """Remove temp folders left by control planes whose Python process was SIGKILLed."""
    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        match = re.match(rf"{TEMP_PREFIX}(\d+)-", path.name)
        if match and not procs.pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
