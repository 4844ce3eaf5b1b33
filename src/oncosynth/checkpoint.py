"""Checkpoints that load safely on any current PyTorch.

A checkpoint is a folder: ``weights.safetensors`` (tensors only, never
pickle), ``config.json`` (how to rebuild the model, including its ``kind``)
and ``manifest.json`` (provenance, and ``weights_sha256``: the SHA-256 of the
weights file as written). Loading checks that hash, so flipped bytes inside
the tensor data (which safetensors itself cannot notice) are refused by name
instead of producing noise. Nothing here unpickles a file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes, load_file, save as save_bytes

from oncosynth.errors import CheckpointError
from oncosynth.io import atomic_write, write_json

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
MANIFEST = "manifest.json"
HASH_KEY = "weights_sha256"


def save_checkpoint(folder: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                    manifest: dict[str, Any] | None = None) -> Path:
    """Write weights, config and manifest atomically (config last: it marks completion)."""
    if "kind" not in config:
        raise ValueError("checkpoint config needs a 'kind' (e.g. 'generator/cdcgan')")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = save_bytes(contiguous)
    with atomic_write(folder / WEIGHTS) as handle:
        handle.write(data)
    write_json(folder / MANIFEST, {**(manifest or {}), HASH_KEY: hashlib.sha256(data).hexdigest()})
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
    config = _read_json_object(config_path, "config")
    found = str(config.get("kind", ""))
    if kind is not None and not found.startswith(kind):
        raise CheckpointError(f"{folder}: checkpoint holds a '{found or 'unknown'}', expected '{kind}'")
    manifest = read_manifest(folder / MANIFEST)
    try:
        data = weights_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{weights_path}: unreadable weights ({exc})") from None
    expected = manifest.get(HASH_KEY)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"{weights_path}: corrupt weights (their SHA-256 differs from the one recorded "
                              f"in {MANIFEST} when it was written)")
    try:
        tensors = {k: v.to(device) for k, v in load_bytes(data).items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: corrupt weights ({exc})") from None
    return tensors, config, manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """A checkpoint's manifest (``{}`` when absent: checkpoints from before manifests were hashed)."""
    if not path.is_file():
        return {}
    return _read_json_object(path, "manifest")


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A checkpoint's JSON file as a dict, or a CheckpointError naming the file and what is wrong."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt {what} ({exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: corrupt {what} (not a JSON object)")
    return obj


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
