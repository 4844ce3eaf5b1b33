"""File output in one place: atomic writes and image <-> tensor conversion.

Every file the library writes goes through ``atomic_write`` so that a kill
mid-write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


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
