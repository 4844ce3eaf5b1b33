"""``encoder:<checkpoint folder>``: feature networks read from oncosynth's own checkpoints.

Which loader reads a checkpoint is decided by the ``kind`` in its config.json.
Packages that own a kind of encoder register a loader for it with
:func:`register_encoder` when they are imported (``oncosynth.classifiers`` for
``classifier``, ``oncosynth.quality`` for ``anomaly-detector/...``, and
``features.small`` for ``feature-net/small-cnn``), so this package imports
none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from oncosynth.checkpoint import load_checkpoint
from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.features.base import FeatureNet

#: loader(folder, tensors, config, name, input_size) -> FeatureNet
EncoderLoader = Callable[[Path, dict[str, torch.Tensor], dict[str, Any], str, "int | None"], FeatureNet]

_LOADERS: dict[str, EncoderLoader] = {}

# Kinds whose loader lives in a package this one must not import: named here only to
# say which import is missing when such a checkpoint arrives before its package.
_OWNERS = {"classifier": "oncosynth.classifiers", "anomaly-detector": "oncosynth.quality"}


def register_encoder(kind_prefix: str, loader: EncoderLoader) -> EncoderLoader:
    """Read checkpoints whose ``kind`` starts with ``kind_prefix`` with ``loader``."""
    _LOADERS[kind_prefix] = loader
    return loader


def registered_encoders() -> list[str]:
    return sorted(_LOADERS)


def load_encoder(arg: str, input_size: int | None) -> FeatureNet:
    """The feature network in the checkpoint folder ``arg`` (always built on the CPU)."""
    if not arg:
        raise ConfigError("feature net 'encoder:' needs a checkpoint folder")
    folder = Path(arg)
    tensors, config, _ = load_checkpoint(folder, device="cpu")
    kind = str(config.get("kind", ""))
    name = f"encoder[{folder.name}]"
    for prefix in sorted(_LOADERS, key=len, reverse=True):
        if kind.startswith(prefix):
            return _LOADERS[prefix](folder, tensors, config, name, input_size)
    owner = next((module for prefix, module in _OWNERS.items() if kind.startswith(prefix)), None)
    if owner is not None:
        raise ConfigError(f"{folder}: a '{kind}' encoder is read by {owner}; import {owner} before building "
                          f"the feature net")
    raise CheckpointError(f"{folder}: '{kind}' is not an encoder (expected one of: "
                          f"{', '.join(sorted(set(_LOADERS) | set(_OWNERS)))})")
