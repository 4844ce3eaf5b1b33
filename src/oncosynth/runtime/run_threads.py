"""One thread count per resumable run, so that a resume computes what an uninterrupted run computes.

A thread count changes how float sums are split and so the last bits of every reduction: three
ResNet steps with one thread and with two differ by up to 1e-4. oncosynth picks the count from
the machine it starts on (one thread on a shared machine, :mod:`oncosynth.threads`), so a run
started on a busy machine and resumed on an idle one would otherwise change count mid-run and end
elsewhere than an uninterrupted run.

:class:`RunThreads` closes that: the first start writes the count torch uses to
``<run folder>/threads.json``; a resume finds the file and sets torch to the recorded count for the
rest of the run, whatever this process chose, then puts the process's own count back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from oncosynth.io import set_aside, write_json

log = logging.getLogger("oncosynth.runtime")

THREADS_FILE = "threads.json"


def pinned_count(folder: str | Path, wanted: int, write: bool = True) -> int:
    """The thread count a run in ``folder`` uses: the one it recorded when it started, else ``wanted``
    (recorded now, unless ``write`` is False)."""
    path = Path(folder) / THREADS_FILE
    recorded = _recorded(path)
    if recorded is None:
        if write:
            write_json(path, {"threads": int(wanted)})
        return int(wanted)
    if recorded != wanted:
        log.info("%s: resuming with the run's %d CPU threads (this process chose %d), so that it ends "
                 "where an uninterrupted run ends", path.parent, recorded, wanted)
    return recorded


def _recorded(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        count = json.loads(path.read_text())["threads"]
        if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
            return count
        problem = f"threads {count!r} is not a positive whole number"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    set_aside(path, f"{problem}; the run goes on with this process's thread count, so a resumed "
                    f"run may differ in the last bits from an uninterrupted one")
    return None


class RunThreads:
    """Run a resumable unit with the thread count it started with (use as ``with RunThreads(folder) as n:``).

    ``write=False`` (a distributed rank other than the first) reads a recorded count but records none.
    ``count`` is the count the unit runs with; ``restore()`` puts back the count the process had before.
    """

    def __init__(self, folder: str | Path, write: bool = True):
        self.previous = torch.get_num_threads()
        self.count = pinned_count(folder, self.previous, write)
        if self.count != self.previous:
            torch.set_num_threads(self.count)

    def restore(self) -> None:
        if torch.get_num_threads() != self.previous:
            torch.set_num_threads(self.previous)

    def __enter__(self) -> int:
        return self.count

    def __exit__(self, *exc_info) -> None:
        self.restore()
