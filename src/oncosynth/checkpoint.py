"""Checkpoints that load safely on any current PyTorch.

A checkpoint is a folder: ``weights.safetensors`` (tensors only, never
pickle), ``config.json`` (how to rebuild the model, including its ``kind``)
and ``manifest.json`` (provenance). Nothing here unpickles a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as save_bytes

from oncosynth.errors import CheckpointError
from oncosynth.io import atomic_write, write_json

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
MANIFEST = "manifest.json"


def save_checkpoint(folder: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                    manifest: dict[str, Any] | None = None) -> Path:
    """Write weights, config and manifest atomically (config last: it marks completion)."""
    if "kind" not in config:
        raise ValueError("checkpoint config needs a 'kind' (e.g. 'generator/cdcgan')")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_write(folder / WEIGHTS) as handle:
        handle.write(save_bytes(contiguous))
    write_json(folder / MANIFEST, manifest or {})
    write_json(folder / CONFIG, config)
    return folder


def load_checkpoint(folder: str | Path, kind: str | None = None,
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint folder; ``kind`` (prefix match) guards against loading the wrong model."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG, folder / WEIGHTS
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{folder}: not a checkpoint (needs {CONFIG} and {WEIGHTS})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: corrupt config ({exc})") from None
    found = str(config.get("kind", ""))
    if kind is not None and not found.startswith(kind):
        raise CheckpointError(f"{folder}: checkpoint holds a '{found or 'unknown'}', expected '{kind}'")
    try:
        tensors = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: corrupt weights ({exc})") from None
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return tensors, config, manifest


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file, never unpickling objects.

    For weights that come from outside oncosynth (ImageNet backbones, timm or
    torchvision files): torch files are opened with ``weights_only=True`` and
    the common wrappers (``state_dict``, ``model``, ``model_state_dict``) are
    unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt file or one holding more than tensors
        raise CheckpointError(f"{path}: not a weights-only state dict ({exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return state
