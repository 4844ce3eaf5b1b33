"""Moved to :mod:`oncosynth.parallel.executor`; this thin re-export stays for one release."""

from oncosynth.parallel.executor import (Executor, LocalExecutor, Outcome, Resources, Unit,
                                         create_executor, run_all)
from oncosynth.parallel.ray_executor import RayExecutor

__all__ = ["Executor", "LocalExecutor", "Outcome", "RayExecutor", "Resources", "Unit", "create_executor", "run_all"]
