"""The generator registry: register, list, create and load generators by name.

After timm's ``_registry`` / ``_factory``: a model module decorates its class
with :func:`register_generator`; :func:`create_generator` makes an untrained
one by name and :func:`load_generator` reads a trained one back from the
``kind`` in its ``config.json``. This module imports no model: importing the
package ``oncosynth.generators`` imports the built-in models, which registers
them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from oncosynth.errors import CheckpointError, ConfigError

KIND_PREFIX = "generator/"

_REGISTRY: dict[str, type] = {}
_ALIASES: dict[str, str] = {}


def register_generator(*aliases: str):
    """Class decorator: register a Generator subclass under its ``name`` and any aliases."""

    def wrap(cls: type) -> type:
        if not getattr(cls, "name", ""):
            raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
        _REGISTRY[cls.name] = cls
        for alias in aliases:
            _ALIASES[alias] = cls.name
        return cls

    return wrap


def list_generators() -> list[str]:
    return sorted(_REGISTRY)


def generator_class(name: str) -> type:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        known = sorted(_REGISTRY) + sorted(f"{a} (= {t})" for a, t in _ALIASES.items())
        raise ConfigError(f"unknown generator '{name}'; known: {', '.join(known)}")
    return _REGISTRY[key]


def create_generator(name: str, preset: str | None = None, **config: Any):
    """Make an untrained generator by registry name, e.g. ``create_generator("cdcgan", width=16)``."""
    return generator_class(name)(preset=preset, **config)


def latest_checkpoint(run_folder: str | Path) -> Path | None:
    """The newest complete checkpoint under ``run_folder/checkpoints`` (config.json marks completion)."""
    folder = Path(run_folder) / "checkpoints"
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob("step-*") if (p / "config.json").is_file())
    return done[-1] if done else None


def load_generator(run_folder: str | Path, device: str | torch.device = "cpu"):
    """Load a trained generator from a run folder (final model, else its latest checkpoint)."""
    folder = Path(run_folder)
    if not (folder / "config.json").is_file():
        latest = latest_checkpoint(folder)
        if latest is None:
            raise CheckpointError(f"{folder}: no generator checkpoint here (no config.json, no checkpoints/step-*)")
        folder = latest
    try:
        kind = str(json.loads((folder / "config.json").read_text()).get("kind", ""))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{folder}/config.json: corrupt ({exc})") from None
    if not kind.startswith(KIND_PREFIX):
        raise CheckpointError(f"{folder}: checkpoint holds a '{kind or 'unknown'}', not a generator")
    return generator_class(kind[len(KIND_PREFIX):]).load(folder, device=device)
