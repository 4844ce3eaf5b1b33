"""CPU threads that keep their speed on a shared machine.

torch's OpenMP runtime (GNU libgomp) makes a waiting worker thread spin for
300 000 iterations (several milliseconds) before it sleeps. On a machine where
another process holds a core, the thread a barrier waits for is often not
running, and its partner burns its time slice spinning: a small GAN step went
from 0.08 s to 1.8 s beside one busy process (bench/RESULTS.md, "Speed under
load"). Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) fixes that but costs a
third of the idle speed, because every small operation then pays a futex
wake-up.

oncosynth's policy: a short spin (``GOMP_SPINCOUNT``, see ``SPIN_COUNT``): long
enough to cover the gap between two small operations on an idle machine,
short enough that a thread whose partner is descheduled goes to sleep within
tens of microseconds. The thread count stays torch's default (one per core):
measured, fewer threads lose idle speed and gain nothing once waiting is short.

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
from typing import MutableMapping

# Iterations of libgomp's pause loop before a waiting thread sleeps (libgomp's own default: 300 000).
# Chosen from bench/bench_load.py (bench/RESULTS.md "Speed under load").
SPIN_COUNT = 2_000
# Any of these set by the user means the user chose how threads wait.
USER_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

_STATUS = "not applied"


def apply_wait_policy(environ: MutableMapping[str, str] | None = None,
                      modules: dict | None = None) -> str:
    """Set the short spin unless the user chose a wait policy or the runtime already started.

    Returns what happened: ``"set"``, ``"user"`` (kept the user's setting) or
    ``"too late"`` (torch was imported before oncosynth; libgomp's default stays).
    """
    global _STATUS
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if any(environ.get(knob) for knob in USER_KNOBS):
        _STATUS = "user"
    elif "torch" in modules:
        _STATUS = "too late"
    else:
        environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
        _STATUS = "set"
    return _STATUS


def status() -> dict[str, str | None]:
    """How OpenMP threads wait in this process, for manifests and bug reports."""
    return {"policy": _STATUS, **{knob: os.environ.get(knob) for knob in (*USER_KNOBS, "OMP_NUM_THREADS")}}
