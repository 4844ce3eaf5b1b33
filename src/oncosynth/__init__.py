"""oncosynth: synthetic data augmentation for cancer imaging."""

from oncosynth.heap import apply_heap_policy as _apply_heap_policy
from oncosynth.threads import apply_wait_policy as _apply_wait_policy

__version__ = "0.1.0"

# Before torch starts its OpenMP runtime: how worker threads wait decides the speed on a shared machine.
_apply_wait_policy()
# Before the first big tensor: freed memory stays mapped for the next step (DP-SGD: 1.7-1.9x, see heap.py).
_apply_heap_policy()
