"""Where independent units of work run: one seam for every embarrassingly parallel job.

A study grid is many classifier trainings, a SinGAN group is one training per
image, a style-transfer campaign is many batches of pairs. Each of those code
paths describes its work as :class:`Unit` objects and hands them to an
:class:`Executor`; the executor decides where they run (in this process, in a
local process pool, or as Ray tasks on a cluster: :class:`RayExecutor`).

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
import contextlib
import multiprocessing
import os
import traceback
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator

from oncosynth.errors import ConfigError
from oncosynth.runtime.orphans import exit_with_parent


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

    def check(self, units: list[Unit]) -> None:
        """Raise ConfigError if some unit cannot run here; called before any work. Default: nothing to check."""

    def close(self) -> None:
        """Release workers / cluster connections."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
        _check_keys(units)
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
                        running[lanes[lane].submit(_call, unit)] = (lane, unit)
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
                            error = _error_text(exc)
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
                return Outcome(unit.key, value=_call(unit), attempts=attempt)
            except Exception as exc:  # noqa: BLE001
                error = _error_text(exc)
        return Outcome(unit.key, error=error, attempts=self.retries + 1)


def _check_keys(units: list[Unit]) -> None:
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ConfigError("unit keys must be unique; duplicated: "
                          f"{sorted({k for k in keys if keys.count(k) > 1})}")


class RayExecutor(Executor):
    """Each unit is one Ray task with its :class:`Resources` declared, so Ray places it on a node
    with free CPUs/GPUs/memory.

    ``address=None`` starts a private local cluster of ``num_cpus`` CPUs (shut down by
    :meth:`close`); ``"auto"`` joins the cluster this machine belongs to (``ray start`` ran
    here); ``"HOST:PORT"`` joins that head node. Retries are done by this driver (Ray's own
    retries are off) so a unit gets exactly ``retries`` further attempts whether it raised or
    its worker process died, and ``Outcome.attempts`` counts them. At most ``max_in_flight``
    tasks are submitted at a time (more are queued here), so a 100,000-unit campaign keeps
    the driver's bookkeeping and the head node's task table small.

    Workers import ``fn`` by module name: on a local cluster this package's source folder is
    put on their ``PYTHONPATH``; on a remote cluster oncosynth must be installed on every node
    (or shipped with ``runtime_env={"py_modules": [...]}``).
    """

    name = "ray"

    def __init__(self, address: str | None = "auto", num_cpus: int | None = None, retries: int = 0,
                 runtime_env: dict[str, Any] | None = None, check_resources: bool = True,
                 max_in_flight: int = 2000):
        super().__init__(retries)
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'oncosynth[ray]' "
                              "(or pip install ray), or use --executor local") from None
        self._ray = ray
        self.address = address
        self.check_resources = check_resources
        self._owns_cluster = False
        if num_cpus is not None and address is not None:
            raise ConfigError("num_cpus sizes a new local cluster; it cannot be given with a cluster address")
        if ray.is_initialized():  # the caller connected already: use that cluster as it is
            return
        env = dict(runtime_env or {})
        if address is None:
            env_vars = dict(env.get("env_vars", {}))
            env_vars.setdefault("PYTHONPATH", _source_pythonpath())
            env["env_vars"] = env_vars
        elif address != "auto":
            _check_reachable(address)
        try:
            with _worker_niceness(0 if address is None else None):
                ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         runtime_env=env or None, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "no running Ray cluster was found on this machine (start one with `ray start --head`, " \
                    "or give --ray-address HOST:PORT)" if address == "auto" else f"cannot join the Ray cluster at {address}"
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            chain = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
            if "InvalidAuthToken" in chain or "AuthenticationError" in chain:
                text += ("; the cluster uses token authentication: run with RAY_AUTH_MODE=token set, the token "
                         "being in ~/.ray/auth_token or RAY_AUTH_TOKEN (see Ray's token-authentication page)")
            raise ConfigError(f"{where}: {text}") from None
        self._owns_cluster = address is None

    # ------------------------------------------------------------------ checks
    def node_resources(self) -> list[dict[str, float]]:
        """Per alive node: CPU, GPU, memory (GB) that Ray can hand out."""
        nodes = []
        for node in self._ray.nodes():
            if node.get("Alive", True):
                res = node.get("Resources", {})
                nodes.append({"cpus": res.get("CPU", 0.0), "gpus": res.get("GPU", 0.0),
                              "memory_gb": res.get("memory", 0.0) / 2**30})
        return nodes

    def check(self, units: list[Unit]) -> None:
        """Raise ConfigError if some unit cannot fit on any node of the cluster (before any submission)."""
        nodes = self.node_resources()
        for unit in units:
            need = unit.resources
            fits = any(need.cpus <= n["cpus"] and need.gpus <= n["gpus"]
                       and (need.memory_gb is None or need.memory_gb <= n["memory_gb"]) for n in nodes)
            if not fits:
                have = ", ".join(f"{n['cpus']:g} CPU / {n['gpus']:g} GPU / {n['memory_gb']:.1f} GB"
                                 for n in nodes) or "no alive node"
                wanted = f"{need.cpus:g} CPU / {need.gpus:g} GPU" + (
                    f" / {need.memory_gb:g} GB" if need.memory_gb is not None else "")
                raise ConfigError(f"unit '{unit.key}' needs {wanted} on one node, but no node of the Ray "
                                  f"cluster has that (nodes: {have}); nothing was submitted")

    # ------------------------------------------------------------------ running
    def _submit(self, unit: Unit):
        need = unit.resources
        options: dict[str, Any] = {"num_cpus": need.cpus, "num_gpus": need.gpus, "max_retries": 0,
                                   "retry_exceptions": False, "name": unit.key}
        if need.memory_gb is not None:
            options["memory"] = int(need.memory_gb * 2**30)
        return _ray_remote(self._ray, gpu=need.gpus > 0).options(**options).remote(unit.fn, unit.args, unit.kwargs)

    def run(self, units: Iterable[Unit]) -> Iterator[Outcome]:
        ray = self._ray
        units = list(units)
        _check_keys(units)
        if self.check_resources:
            self.check(units)
        attempts = {unit.key: 1 for unit in units}
        queue = list(reversed(units))  # popped from the end: submitted in the given order
        pending: dict[Any, Unit] = {}
        try:
            while pending or queue:
                while queue and len(pending) < self.max_in_flight:
                    unit = queue.pop()
                    pending[self._submit(unit)] = unit
                refs = list(pending)
                done, _ = ray.wait(refs, num_returns=1)
                more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)  # everything else already finished
                for ref in dict.fromkeys([*done, *more]):
                    unit = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        if attempts[unit.key] <= self.retries:
                            attempts[unit.key] += 1
                            pending[self._submit(unit)] = unit
                            continue
                        yield Outcome(unit.key, error=_ray_error_text(exc), attempts=attempts[unit.key])
                    else:
                        yield Outcome(unit.key, value=value, attempts=attempts[unit.key])
        finally:  # an interrupted driver (Ctrl-C, an exception in the caller) leaves no task behind
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns_cluster and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns_cluster = False


@contextlib.contextmanager
def _worker_niceness(niceness: int | None):
    """Start a local cluster whose workers run at ``niceness`` (None: Ray's default, or the user's).

    Ray's raylet starts task workers at nice 15 unless ``RAY_worker_niceness`` says otherwise. On a
    shared machine that starves them: beside two busy nice-0 processes on 2 cores a study cell of
    0.8 s took 210 s (each worker got about 3 % of a core). A user's own setting is kept.
    """
    if niceness is None or "RAY_worker_niceness" in os.environ:
        yield
        return
    os.environ["RAY_worker_niceness"] = str(niceness)  # read by the raylet that ray.init starts
    try:
        yield
    finally:
        os.environ.pop("RAY_worker_niceness", None)


_REMOTE: dict[bool, Any] = {}


def _ray_remote(ray, gpu: bool = False):
    """The remote function that runs any unit (resources are set per call with ``.options``).

    GPU units get a fresh worker process each (``max_calls=1``, Ray's own default for functions
    declared with GPUs): a reused process would keep the GPU it initialised CUDA on, whatever GPU
    Ray assigns to its next task. CPU workers are reused, so imports are paid once per worker.
    """
    if gpu not in _REMOTE:
        _REMOTE[gpu] = ray.remote(max_calls=1)(_call_parts) if gpu else ray.remote(_call_parts)
    return _REMOTE[gpu]


def _call_parts(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


def _ray_error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return _error_text(cause)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _source_pythonpath() -> str:
    from pathlib import Path

    source = str(Path(__file__).resolve().parents[2])  # the folder holding the oncosynth package
    current = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([source, *[p for p in current.split(os.pathsep) if p and p != source]])


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A clear error for a HOST:PORT nobody listens on (ray.init would retry for a minute or more)."""
    import socket

    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address '{address}' is not 'auto' or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray head at {address} ({exc.strerror or exc}); is `ray start --head` "
                          f"running there and the port open? Nothing was submitted") from None


EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


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
