"""Moved to :mod:`oncosynth.parallel.executor`; this thin re-export stays for one release."""

from oncosynth.parallel.executor import (Executor, LocalExecutor, Outcome, RayExecutor, Resources, Unit,
                                         create_executor, run_all)

__all__ = ["Executor", "LocalExecutor", "Outcome", "RayExecutor", "Resources", "Unit", "create_executor", "run_all"]
