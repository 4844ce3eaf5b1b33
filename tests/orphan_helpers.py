"""The check behind the orphan tests: a child process must end soon after its parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def assert_child_ends_with_parent(parent_source: str, folder: Path, *args: str, what: str = "child",
                                  start_timeout: float = 120.0, grace: float = 10.0) -> None:
    """Run ``parent_source`` as a script with argv ``[pid_file, *args]``; it must start a child that writes
    its pid to ``pid_file``. SIGKILL the parent (as the OOM killer or ``kill -9`` would), then require the
    child to be gone within ``grace`` seconds."""
    script, pid_file = folder / "parent.py", folder / "child.pid"
    script.write_text(parent_source)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), *args])
    try:
        deadline = time.monotonic() + start_timeout
        while not (pid_file.is_file() and pid_file.read_text()):
            assert parent.poll() is None, f"the parent ended before its {what} started"
            assert time.monotonic() < deadline, f"the {what} did not start within {start_timeout:.0f} s"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"the {what} outlived its killed parent by {grace:.0f} s")
    finally:
        parent.kill()
