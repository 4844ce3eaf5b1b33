"""Ray as an executor: each unit one Ray task, placed by the resources it declares.

Kept apart from :mod:`oncosynth.parallel.executor` so that local runs never import Ray;
``create_executor("ray", ...)`` imports this module when asked for it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterable, Iterator

from oncosynth.errors import ConfigError
from oncosynth.parallel.units import Executor, Outcome, Resources, Unit, check_unique_keys, error_text


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
        check_unique_keys(units)
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
        return error_text(cause)
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
