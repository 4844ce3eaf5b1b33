"""oncosynth: synthetic data augmentation for cancer imaging."""

from oncosynth.heap import apply_at_import as _apply_heap_policy
from oncosynth.threads import apply_wait_policy as _apply_wait_policy

__version__ = "0.1.0"

# Before torch starts its OpenMP runtime: how worker threads wait decides the speed on a shared machine.
_apply_wait_policy()
# ONCOSYNTH_HEAP=keep: freed memory stays mapped for the next step in all work (DP-SGD does it anyway; heap.py).
_apply_heap_policy()
