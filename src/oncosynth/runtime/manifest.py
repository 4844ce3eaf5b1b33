"""Provenance: what every computed output records about itself (versions, data hash, config)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
from importlib import metadata
from typing import Any, Iterable


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
