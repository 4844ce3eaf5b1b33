"""The contract between work and where it runs: a unit of work, its resources, its outcome, and
the executor interface (see :mod:`oncosynth.parallel.executor` for the rules a unit follows).

Both executors build on this module, so neither imports the other.
"""

from __future__ import annotations

import abc
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


def call_unit(unit: Unit) -> Any:
    return unit.fn(*unit.args, **unit.kwargs)


def error_text(exc: BaseException) -> str:
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

    def check(self, units: list[Unit]) -> None:
        """Raise ConfigError if some unit cannot run here; called before any work. Default: nothing to check."""

    def close(self) -> None:
        """Release workers / cluster connections."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_unique_keys(units: list[Unit]) -> None:
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ConfigError("unit keys must be unique; duplicated: "
                          f"{sorted({k for k in keys if keys.count(k) > 1})}")
