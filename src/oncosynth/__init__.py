"""oncosynth: synthetic data augmentation for cancer imaging."""

from oncosynth.threads import apply_wait_policy as _apply_wait_policy

__version__ = "0.1.0"

# Before torch starts its OpenMP runtime: how worker threads wait decides the speed on a shared machine.
_apply_wait_policy()
