"""CPU threads that keep their speed on a shared machine.

torch's OpenMP runtime (GNU libgomp) makes a waiting worker thread spin for
300 000 iterations (several milliseconds) before it sleeps. On a machine where
another process holds a core, the thread a barrier waits for is often not
running, and its partner burns its time slice spinning: a small GAN step went
from 0.08 s to 1.8 s beside one busy process (bench/RESULTS.md, "Speed under
load"). Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) fixes that but costs a
third of the idle speed, because every small operation then pays a futex
wake-up.

oncosynth's policy, chosen once when oncosynth is imported:

* on a machine where other processes already hold CPU time (sampled from ``/proc/stat`` over
  ``SAMPLE_SECONDS``), a short spin (``SPIN_COUNT``): a thread whose partner is descheduled goes
  to sleep within ~0.1 ms instead of burning its time slice;
* on an idle machine, a longer spin (``SPIN_COUNT_IDLE``), which keeps the idle speed of models
  made of many tiny operations (the demo's GAN step: the short spin costs it a quarter of its
  idle speed, because the second thread sleeps between operations and pays a wake-up each time).

A neighbour that starts after oncosynth was imported meets the idle-machine spin: still far better
than libgomp's default (bench/RESULTS.md, "Speed under load", rows spin=N). The thread count stays
torch's default (one per core): fewer threads lose idle speed and gain nothing once waiting is short.

The runtime reads these variables once, when torch is imported, so the policy
is set when ``oncosynth`` is imported (the CLI imports it before torch). A
library user who imports torch first keeps libgomp's default; ``status()``
says which happened. Anything the user set is kept: ``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``, ``OMP_NUM_THREADS``, and ``torch.set_num_threads`` (never
called here).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, MutableMapping

# Iterations of libgomp's pause loop before a waiting thread sleeps (libgomp's own default: 300 000).
# Chosen from bench/bench_load.py (bench/RESULTS.md "Speed under load").
SPIN_COUNT = 2_000
# Iterations on a machine that was idle when oncosynth started.
SPIN_COUNT_IDLE = 20_000
# Others' CPU use (in cores) at or above which the machine counts as shared, and how long to sample it.
SHARED_CORES = 0.5
SAMPLE_SECONDS = 0.06
# Any of these set by the user means the user chose how threads wait.
USER_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

_STATUS = "not applied"
_MACHINE = "not sampled"


def apply_wait_policy(environ: MutableMapping[str, str] | None = None,
                      modules: dict | None = None, busy_cores: Callable[[], float | None] | None = None) -> str:
    """Set the spin for this machine unless the user chose a wait policy or the runtime already started.

    Returns what happened: ``"set"``, ``"user"`` (kept the user's setting) or
    ``"too late"`` (torch was imported before oncosynth; libgomp's default stays).
    ``busy_cores`` measures other processes' CPU use in cores (default: ``others_busy_cores``).
    """
    global _STATUS, _MACHINE
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if any(environ.get(knob) for knob in USER_KNOBS):
        _STATUS = "user"
    elif "torch" in modules:
        _STATUS = "too late"
    else:
        one_thread = environ.get("OMP_NUM_THREADS", "").strip() == "1" or (os.cpu_count() or 1) == 1
        busy = None if one_thread else (busy_cores or others_busy_cores)()  # one thread never waits at a barrier
        _MACHINE = "unknown" if busy is None else ("shared" if busy >= SHARED_CORES else "idle")
        environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT_IDLE if _MACHINE == "idle" else SPIN_COUNT)
        _STATUS = "set"
    return _STATUS


def others_busy_cores(seconds: float = SAMPLE_SECONDS, stat: str = "/proc/stat") -> float | None:
    """CPU cores kept busy by other processes over a short sample (this process is still importing).

    None where ``/proc/stat`` cannot be read (not Linux): the caller then assumes a shared machine.
    """
    def totals() -> tuple[int, int]:
        with open(stat) as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = totals()
        time.sleep(seconds)
        total1, idle1 = totals()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / elapsed)


def status() -> dict[str, str | None]:
    """How OpenMP threads wait in this process, for manifests and bug reports."""
    return {"policy": _STATUS, "machine": _MACHINE, **{knob: os.environ.get(knob) for knob in (*USER_KNOBS, "OMP_NUM_THREADS")}}
