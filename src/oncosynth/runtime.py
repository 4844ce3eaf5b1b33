"""Seeds, devices and provenance: what every run records about itself."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import random
from importlib import metadata
from typing import Any, Iterable

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from oncosynth.errors import ConfigError

        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("oncosynth", "torch", "torchvision", "timm", "numpy", "opacus"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def hash_strings(items: Iterable[str]) -> str:
    """A short stable hash of a sequence of strings (e.g. file paths + stats)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def make_manifest(kind: str, config: dict[str, Any], seed: int | None = None,
                  data_hash: str | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance block every computed output carries."""
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "data_hash": data_hash,
        "versions": package_versions(),
        "config": config,
        **extra,
    }
