"""Where independent units of work run: one seam for every embarrassingly parallel job.

A study grid is many classifier trainings, a SinGAN group is one training per
image, a style-transfer campaign is many batches of pairs. Each of those code
paths describes its work as :class:`Unit` objects and hands them to an
:class:`Executor`; the executor decides where they run (in this process, in a
local process pool, or as Ray tasks on a cluster: ``ray_executor.RayExecutor``, imported only
when asked for, so the local path never loads Ray).

Rules a unit must follow so that every executor can run it:

* ``fn`` is a module-level function (it is pickled to other processes/hosts);
* arguments are plain values or small objects; big inputs are read from disk
  by the unit itself;
* results (checkpoints, predictions) are written by the unit into a shared
  output folder, atomically, so resume works whichever executor ran it; the
  return value is a small summary.

A failing unit never stops the others: it comes back as an :class:`Outcome`
whose ``error`` holds the message, after ``retries`` further attempts.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

from oncosynth.errors import ConfigError
from oncosynth.parallel.units import (Executor, Outcome, Resources, Unit, call_unit, check_unique_keys,
                                      error_text)
from oncosynth.runtime.orphans import exit_with_parent

__all__ = ["Executor", "LocalExecutor", "Outcome", "Resources", "Unit", "create_executor", "run_all"]


class LocalExecutor(Executor):
    """``workers=0``: run each unit in this process, in order (debuggable, no pickling).
    ``workers>=1``: that many spawned worker processes (safe with torch threads); a unit whose
    worker dies is retried in a fresh one, like a unit that raised."""

    name = "local"

    def __init__(self, workers: int = 0, retries: int = 0):
        super().__init__(retries)
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, not {workers}")
        self.workers = workers

    def run(self, units: Iterable[Unit]) -> Iterator[Outcome]:
        units = list(units)
        check_unique_keys(units)
        if self.workers == 0:
            for unit in units:
                yield self._run_inline(unit)
            return
        yield from self._run_pool(units)

    def _run_pool(self, units: list[Unit]) -> Iterator[Outcome]:
        """Units on ``workers`` lanes, each a one-process pool that runs one unit at a time.

        One process per lane, not one shared pool: when a worker dies (OOM kill, segfault) a
        shared ``ProcessPoolExecutor`` breaks and fails every unit in it, so the culprit cannot be
        told from the bystanders. A dead lane names its one unit; only that unit is charged an
        attempt, and the lane restarts with a fresh process. Living workers are reused, so imports
        are paid once per lane. A worker ends itself when this process is killed
        (``runtime.orphans``), so a re-run never meets it still writing the unit it restarts.
        """
        context = multiprocessing.get_context("spawn")
        queue = deque(units)
        attempts = {unit.key: 1 for unit in units}
        lanes: list[futures.ProcessPoolExecutor | None] = [None] * self.workers
        running: dict[futures.Future, tuple[int, Unit]] = {}
        try:
            while queue or running:
                busy = {lane for lane, _ in running.values()}
                for lane in range(self.workers):
                    if queue and lane not in busy:
                        if lanes[lane] is None:
                            lanes[lane] = futures.ProcessPoolExecutor(max_workers=1, mp_context=context,
                                                                   initializer=exit_with_parent)
                        unit = queue.popleft()
                        running[lanes[lane].submit(call_unit, unit)] = (lane, unit)
                done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    lane, unit = running.pop(future)
                    try:
                        value = future.result()
                    except BaseException as exc:  # noqa: BLE001 - a unit's failure is reported, not raised
                        if isinstance(exc, KeyboardInterrupt):
                            raise
                        if isinstance(exc, BrokenProcessPool):
                            lanes[lane].shutdown(wait=False)
                            lanes[lane] = None
                            error = "its worker process died (killed, out of memory or crashed) while running it"
                        else:
                            error = error_text(exc)
                        if attempts[unit.key] <= self.retries:
                            attempts[unit.key] += 1
                            queue.appendleft(unit)
                            continue
                        yield Outcome(unit.key, error=error, attempts=attempts[unit.key])
                    else:
                        yield Outcome(unit.key, value=value, attempts=attempts[unit.key])
        finally:
            for pool in lanes:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)

    def _run_inline(self, unit: Unit) -> Outcome:
        for attempt in range(1, self.retries + 2):
            try:
                return Outcome(unit.key, value=call_unit(unit), attempts=attempt)
            except Exception as exc:  # noqa: BLE001
                error = error_text(exc)
        return Outcome(unit.key, error=error, attempts=self.retries + 1)


def _ray_executor(**options: Any) -> Executor:
    from oncosynth.parallel.ray_executor import RayExecutor  # here, not above: it imports this module

    return RayExecutor(**options)


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": _ray_executor}


def create_executor(name: str = "local", **options: Any) -> Executor:
    """``create_executor("local", workers=2)``, ``create_executor("ray", address=None, num_cpus=2)``."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor '{name}'; known: {sorted(EXECUTORS)}")
    return EXECUTORS[name](**options)


def run_all(units: Iterable[Unit], executor: Executor | None = None) -> list[Outcome]:
    """Run every unit and return the outcomes in the order of ``units``."""
    units = list(units)
    executor = executor or LocalExecutor()
    by_key = {o.key: o for o in executor.run(units)}
    return [by_key[u.key] for u in units]
