"""Keep freed memory in the process, so that big tensors do not cost a page fault per page every step.

glibc's malloc hands every block above its mmap threshold (at most 32 MiB once it adapts) straight
to the kernel with ``mmap`` and returns it with ``munmap`` when freed, and it gives back the top of
the heap once more than 128 KiB is free there. A training step that allocates and frees the same
large buffers every time then pays the kernel to map and zero fresh pages again and again. DP-SGD is
the extreme case: opacus keeps one gradient per image (hundreds of MiB per batch for resnet10t), and
on 2 cores 40 % of a DP cell's CPU time was kernel time; keeping freed memory in the heap made a
DP step 1.7-1.9x as fast with the same numbers (bench/RESULTS.md, "Kernel time in DP-SGD").

So DP-SGD training (``classifiers.train``) asks glibc to keep freed memory up to ``KEEP_BYTES``
mapped for reuse, to serve blocks up to that size from the heap, and to grow the heap in steps of
``TOP_PAD_BYTES``. The cost is memory: the largest step's working set stays mapped, and blocks of
changing sizes (Poisson-sampled batches) fragment the heap, so a DP cell's resident size grew to
3.2 GiB for real images and 5.1 GiB with 3,000 synthetic ones in memory. Five such cells on a 24 GiB
machine met the OOM killer; that is why the policy is not applied to everything. Plain training gains
1.14x and the generators 1.03-1.08x; ``ONCOSYNTH_HEAP=keep`` applies it when oncosynth is imported,
for all work in the process.

Anything the user set is kept: ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``GLIBC_TUNABLES`` switch the policy off, and
``ONCOSYNTH_HEAP=default`` keeps glibc's behaviour even under DP. Elsewhere (macOS, musl) nothing is
changed. The policy changes no computed number, only where memory comes from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings
from typing import Callable, MutableMapping

KEEP_BYTES = 1 << 30
TOP_PAD_BYTES = 64 << 20
# mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
USER_KNOBS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
              "GLIBC_TUNABLES")
SETTING = "ONCOSYNTH_HEAP"  # "keep": everywhere from import on; "default": never, not even under DP
SETTING_VALUES = ("", "keep", "default")

_STATUS = "not applied"


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it; musl and macOS have no mallopt of this meaning
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def _setting(environ: MutableMapping[str, str]) -> str:
    """The user's ``ONCOSYNTH_HEAP``, lower-cased; a value we do not know is named, then treated as unset."""
    value = environ.get(SETTING, "").strip().lower()
    if value not in SETTING_VALUES:
        warnings.warn(f"{SETTING}={environ[SETTING]!r} is not one of 'keep' or 'default'; ignoring it "
                      "(DP-SGD training keeps freed memory, other work uses glibc's defaults)", stacklevel=3)
        return ""
    return value


def apply_at_import(environ: MutableMapping[str, str] | None = None,
                    mallopt: Callable[[int, int], int] | None = None) -> str:
    """``ONCOSYNTH_HEAP=keep``: keep freed memory for all work in this process; otherwise leave it to DP."""
    environ = os.environ if environ is None else environ
    if _setting(environ) == "keep":
        return keep_freed_memory(environ, mallopt)
    return _STATUS


def keep_freed_memory(environ: MutableMapping[str, str] | None = None,
                      mallopt: Callable[[int, int], int] | None = None) -> str:
    """Keep freed memory for reuse unless the user tuned malloc or opted out. Safe to call again.

    Returns what happened: ``"set"``, ``"user"`` (kept the user's malloc settings), ``"off"``
    (``ONCOSYNTH_HEAP=default``), ``"unsupported"`` (not glibc) or ``"refused"`` (glibc rejected a
    value; whatever it accepted stays).
    """
    global _STATUS
    environ = os.environ if environ is None else environ
    if _setting(environ) == "default":
        _STATUS = "off"
    elif any(environ.get(knob) for knob in USER_KNOBS):
        _STATUS = "user"
    else:
        mallopt = mallopt or _glibc_mallopt()
        if mallopt is None:
            _STATUS = "unsupported"
        else:
            # The mmap threshold first: setting the trim threshold also stops glibc adapting it.
            accepted = [mallopt(M_MMAP_THRESHOLD, KEEP_BYTES), mallopt(M_TRIM_THRESHOLD, KEEP_BYTES),
                        mallopt(M_TOP_PAD, TOP_PAD_BYTES)]
            _STATUS = "set" if all(accepted) else "refused"
    return _STATUS


def status() -> dict[str, str | None]:
    """Where this process's freed memory goes, for manifests and bug reports."""
    return {"policy": _STATUS, **{knob: os.environ.get(knob) for knob in (*USER_KNOBS, SETTING)}}
