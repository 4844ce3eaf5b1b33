"""File output in one place: atomic writes and image <-> tensor conversion.

Every file the library writes goes through ``atomic_write`` so that a kill
mid-write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from oncosynth.errors import ConfigError


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (other threads may be writing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it (mkstemp files are created 0600 regardless)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` on success.

    The file gets the permissions a plain ``open`` would give it (0666 less the
    umask), not ``mkstemp``'s private 0600: reports must be readable by others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            if hasattr(os, "fchmod"):  # POSIX; Windows files have no mode bits to fix
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Fail before any work when ``path`` cannot be (or become) a folder of outputs."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ConfigError(f"{path}: {option} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{path}: {option} folder is not writable")
        return path
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{path}: cannot create {option} below {parent}, which is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{path}: cannot create {option} in {parent}, which is not writable")
            break
    return path


def set_aside(path: str | Path, problem: str) -> Path | None:
    """Rename a damaged file or folder out of the way, beside it, and say so; never delete it.

    The new name starts with ``damaged-`` so no ``step-*``/marker lookup finds
    it again, and it may still be all that is left of a long run. It carries the
    process id, so two processes that find the same damage never rename onto each
    other's copy; the one that comes second finds the file gone and returns None.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = path.with_name(f"damaged-{stamp}-{os.getpid()}-{path.name}"), 1
    while target.exists():
        target, n = path.with_name(f"damaged-{stamp}-{os.getpid()}-{n}-{path.name}"), n + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        logging.getLogger("oncosynth").warning("%s: %s; already set aside by another process", path, problem)
        return None
    logging.getLogger("oncosynth").warning("%s: %s; set aside as %s", path, problem, target.name)
    return target


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def cut_log(path: Path, step: int) -> None:
    """Keep the log records up to ``step``: the steps after it are trained (and logged) again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        logged = record.get("step", 0) if isinstance(record, dict) else None
        if isinstance(logged, (int, float)) and logged <= step:
            kept.append(line + "\n")
    write_text(path, "".join(kept))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """C×H×W float in [0, 1] -> H×W (C=1) or H×W×C uint8."""
    if image.ndim != 3:
        raise ValueError(f"expected C×H×W, got shape {tuple(image.shape)}")
    from oncosynth.data.transforms import to_uint8  # lazily: the data package imports this module

    array = to_uint8(image).cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write one C×H×W float [0, 1] tensor as an 8-bit PNG (atomically)."""
    pil = Image.fromarray(tensor_to_uint8(image))
    with atomic_write(path) as handle:
        pil.save(handle, format="PNG")


def grid_array(images: torch.Tensor, nrow: int = 8, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """N×C×H×W -> one C×H'×W' tensor laid out row by row (white padding): the one grid builder,
    behind both PNG grids (``save_grid``) and the grids on HTML pages."""
    if images.ndim != 4:
        raise ValueError(f"expected N×C×H×W, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    ncol = max(1, min(nrow, n))
    nrows = max(1, (n + ncol - 1) // ncol)
    grid = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), float(pad_value))
    for i in range(n):
        r, k = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i].detach().float().cpu().clamp(0, 1)
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, pad: int = 2) -> None:
    """Write N×C×H×W float [0, 1] images as one PNG grid."""
    save_image(grid_array(images, nrow=nrow, pad=pad), path)
