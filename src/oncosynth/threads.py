"""CPU threads that keep their speed on a shared machine.

torch's OpenMP runtime (GNU libgomp) makes a waiting worker thread spin for
300 000 iterations (several milliseconds) before it sleeps. On a machine where
another process holds a core, the thread a barrier waits for is often not
running, and its partner burns its time slice spinning: a small GAN step went
from 0.08 s to 1.8 s beside one busy process (bench/RESULTS.md, "Speed under
load"). Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) fixes that but costs a
third of the idle speed, because every small operation then pays a futex
wake-up.

oncosynth's policy, chosen once when oncosynth is imported, from the machine it starts on (others'
CPU use sampled from ``/proc/stat`` over ``SAMPLE_SECONDS``):

* **shared** (other processes hold at least ``SHARED_CORES``): **one thread**
  (``OMP_NUM_THREADS=1``) and a short spin. Beside a busy process one thread ran the demo's GAN
  step at 0.92x its own idle speed and 0.66x the default's idle speed, where two threads, however
  they wait, reached 0.42x: the second thread waits for a core it rarely gets.
* **idle**: torch's thread count (one per core) and a longer spin (``SPIN_COUNT_IDLE``), which keeps
  the idle speed of models made of many tiny operations (with the short spin the second thread
  sleeps between operations and pays a wake-up each time: a quarter of the GAN step's speed).
* **unknown** (no ``/proc/stat``): torch's thread count and the short spin.

A neighbour that starts after oncosynth was imported meets the idle-machine choice: still far better
than libgomp's default (bench/RESULTS.md, "Speed under load", rows spin=N).

A thread count changes the order of float reductions and so the numbers a run computes. Each
resumable run therefore records the count it started with and a resume uses that one, whatever this
process chose (:class:`oncosynth.runtime.run_threads.RunThreads`).

The runtime reads these variables once, when torch is imported, so the policy
is set when ``oncosynth`` is imported (the CLI imports it before torch). A
library user who imports torch first keeps libgomp's default; ``status()``
says which happened. Anything the user set is kept: ``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` switch the whole policy off; ``OMP_NUM_THREADS`` keeps the
user's thread count (the spin is still chosen); ``torch.set_num_threads`` is never called here.
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
_THREADS = "torch's default"


def apply_wait_policy(environ: MutableMapping[str, str] | None = None,
                      modules: dict | None = None, busy_cores: Callable[[], float | None] | None = None) -> str:
    """Set the spin for this machine unless the user chose a wait policy or the runtime already started.

    Returns what happened: ``"set"``, ``"user"`` (kept the user's setting) or
    ``"too late"`` (torch was imported before oncosynth; libgomp's default stays).
    ``busy_cores`` measures other processes' CPU use in cores (default: ``others_busy_cores``).
    On a shared machine it also sets ``OMP_NUM_THREADS=1`` unless the user set a count.
    """
    global _STATUS, _MACHINE, _THREADS
    environ = os.environ if environ is None else environ
    user_count = environ.get("OMP_NUM_THREADS", "").strip()
    _THREADS = f"the user's OMP_NUM_THREADS={user_count}" if user_count else "torch's default"
    modules = sys.modules if modules is None else modules
    if any(environ.get(knob) for knob in USER_KNOBS):
        _STATUS = "user"
    elif "torch" in modules:
        _STATUS = "too late"
    else:
        one_thread = user_count == "1" or (os.cpu_count() or 1) == 1
        busy = None if one_thread else (busy_cores or others_busy_cores)()  # one thread never waits at a barrier
        _MACHINE = "unknown" if busy is None else ("shared" if busy >= SHARED_CORES else "idle")
        environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT_IDLE if _MACHINE == "idle" else SPIN_COUNT)
        if _MACHINE == "shared" and not user_count:
            environ["OMP_NUM_THREADS"] = "1"
            _THREADS = "one (the machine was shared at start)"
        _STATUS = "set"
    return _STATUS


def others_busy_cores(seconds: float = SAMPLE_SECONDS, stat: str = "/proc/stat") -> float | None:
    """CPU cores kept busy by other processes over a short sample (this process is still importing).

    None where ``/proc/stat`` cannot be read (not Linux): the caller then keeps torch's thread count and
    the short spin.
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
    return {"policy": _STATUS, "machine": _MACHINE, "thread_count": _THREADS,
            **{knob: os.environ.get(knob) for knob in (*USER_KNOBS, "OMP_NUM_THREADS")}}
