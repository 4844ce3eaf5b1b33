"""Unit functions for the Ray executor tests, in a module that imports nothing heavy:
a fresh Ray worker imports it in well under a second."""

from __future__ import annotations

import os
from pathlib import Path


def fail_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x * x


def die_once(marker: str, value: int):
    """Kills its own worker process the first time (as an OOM kill or a lost node would)."""
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(1)
    return value


def sigkill_once(marker: str, value: int):
    """Like ``die_once``, but the worker gets SIGKILL, the signal the kernel's OOM killer sends."""
    import signal

    if not os.path.exists(marker):
        Path(marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def write_pid_and_sleep(path: str, seconds: float):
    """Stands in for a long study cell: says which process runs it, then works for a while."""
    import time

    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


def niceness() -> int:
    """The scheduling priority of the worker process that runs this."""
    return os.nice(0)
