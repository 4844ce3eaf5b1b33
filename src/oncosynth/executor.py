"""Where independent units of work run: one seam for every embarrassingly parallel job.

A study grid is many classifier trainings, a SinGAN group is one training per
image, a style-transfer campaign is many batches of pairs. Each of those code
paths describes its work as :class:`Unit` objects and hands them to an
:class:`Executor`; the executor decides where they run (in this process, in a
local process pool, or -- see issue 8 -- as Ray tasks on a cluster).

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

import abc
import concurrent.futures as futures
import multiprocessing
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator

from oncosynth.errors import ConfigError


@dataclass(frozen=True)
class Resources:
    """What one unit needs; the Ray executor uses it for placement, local ones ignore GPUs."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None


@dataclass
class Unit:
    """One independent piece of work: ``fn(*args, **kwargs)`` identified by ``key``."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)


@dataclass
class Outcome:
    """The result of one unit: its return ``value``, or the ``error`` text after all attempts."""

    key: str
    value: Any = None
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def _call(unit: Unit) -> Any:
    return unit.fn(*unit.args, **unit.kwargs)


def _error_text(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last


class Executor(abc.ABC):
    """Runs units and yields their outcomes as they finish (not necessarily in order)."""

    name: ClassVar[str] = ""

    def __init__(self, retries: int = 0):
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, not {retries}")
        self.retries = retries

    @abc.abstractmethod
    def run(self, units: Iterable[Unit]) -> Iterator[Outcome]:
        """Yield one :class:`Outcome` per unit, as each finishes."""

    def close(self) -> None:
        """Release workers / cluster connections."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """``workers=0``: run each unit in this process, in order (debuggable, no pickling).
    ``workers>=1``: a pool of that many spawned processes (safe with torch threads)."""

    name = "local"

    def __init__(self, workers: int = 0, retries: int = 0):
        super().__init__(retries)
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, not {workers}")
        self.workers = workers

    def run(self, units: Iterable[Unit]) -> Iterator[Outcome]:
        units = list(units)
        _check_keys(units)
        if self.workers == 0:
            for unit in units:
                yield self._run_inline(unit)
            return
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            attempts = {unit.key: 1 for unit in units}
            pending = {pool.submit(_call, unit): unit for unit in units}
            while pending:
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    unit = pending.pop(future)
                    try:
                        value = future.result()
                    except BaseException as exc:  # noqa: BLE001 - a unit's failure is reported, not raised
                        if isinstance(exc, KeyboardInterrupt):
                            raise
                        if attempts[unit.key] <= self.retries:
                            attempts[unit.key] += 1
                            pending[pool.submit(_call, unit)] = unit
                            continue
                        yield Outcome(unit.key, error=_error_text(exc), attempts=attempts[unit.key])
                    else:
                        yield Outcome(unit.key, value=value, attempts=attempts[unit.key])

    def _run_inline(self, unit: Unit) -> Outcome:
        for attempt in range(1, self.retries + 2):
            try:
                return Outcome(unit.key, value=_call(unit), attempts=attempt)
            except Exception as exc:  # noqa: BLE001
                error = _error_text(exc)
        return Outcome(unit.key, error=error, attempts=self.retries + 1)


def _check_keys(units: list[Unit]) -> None:
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ConfigError("unit keys must be unique; duplicated: "
                          f"{sorted({k for k in keys if keys.count(k) > 1})}")


EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor}


def create_executor(name: str = "local", **options: Any) -> Executor:
    """``create_executor("local", workers=2)``; ``"ray"`` once its backend is registered (issue 8)."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor '{name}'; known: {sorted(EXECUTORS)}")
    return EXECUTORS[name](**options)


def run_all(units: Iterable[Unit], executor: Executor | None = None) -> list[Outcome]:
    """Run every unit and return the outcomes in the order of ``units``."""
    units = list(units)
    executor = executor or LocalExecutor()
    by_key = {o.key: o for o in executor.run(units)}
    return [by_key[u.key] for u in units]
