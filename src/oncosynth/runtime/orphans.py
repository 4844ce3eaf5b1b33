"""Worker processes that end with the process that started them.

A spawned worker whose parent is killed (``kill -9``, an out-of-memory kill) is re-parented and
keeps running: a study cell or a demo step would go on writing into the folders that a re-run of
the same command resumes, beside the re-run's own worker. Everything a worker finished is on disk
and the re-run picks it up, so the orphan has nothing left to save and ends at once.
"""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """Start a daemon thread that ends this process (exit status 1) when its parent is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
