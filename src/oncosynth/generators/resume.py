"""Resuming a step-trained generator run: the newest intact checkpoint, the log cut back to it.

A checkpoint that does not load (damaged weights, manifest, config or
``train_state.pt``) is set aside, renamed and never deleted, and the previous
one is tried; with none left the run starts again from step 0. Settings that
differ from the run's are an error naming each changed setting.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from oncosynth.checkpoint import load_checkpoint
from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.generators.base import Generator
from oncosynth.generators.registry import latest_checkpoint
from oncosynth.io import cut_log, set_aside  # noqa: F401 (cut_log moved to io; still importable here)

log = logging.getLogger("oncosynth.generators")

TRAIN_STATE = "train_state.pt"


def resume_newest_intact(gen: Generator, run: Path, run_config: dict[str, Any], data_hash: str,
                         device: torch.device) -> Path | None:
    """Load the newest checkpoint that loads into ``gen``; return it, or None when none is left."""
    while (folder := latest_checkpoint(run)) is not None:
        _refuse_another_kind(folder, gen)  # outside the try: another method's run is not damage to set aside
        try:
            resume_from(gen, folder, run_config, data_hash, device)
            return folder
        except CheckpointError as exc:
            set_aside(folder, f"damaged checkpoint ({exc}); falling back to the previous one")
    return None


def _refuse_another_kind(folder: Path, gen: Generator) -> None:
    """A readable config.json naming another generator: refuse, leaving the run untouched."""
    try:
        kind = str(json.loads((folder / "config.json").read_text()).get("kind", ""))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return  # unreadable: the loader names it as damage
    wanted = "generator/" + gen.name
    if kind and not kind.startswith(wanted):
        raise CheckpointError(f"{folder}: checkpoint holds a '{kind}', expected '{wanted}'; "
                              f"choose another --out (nothing was changed)")


def resume_from(gen: Generator, folder: Path, run_config: dict[str, Any], data_hash: str,
                device: torch.device) -> None:
    tensors, config, manifest = load_checkpoint(folder, kind="generator/" + gen.name, device="cpu")
    changed = changed_settings(manifest.get("config", {}), run_config)
    if changed:
        raise ConfigError(f"{folder.parent.parent}: the run was started with other settings "
                          f"({'; '.join(changed)}); resume with the same ones or choose another --out "
                          f"(nothing was overwritten)")
    if manifest.get("data_hash") != data_hash:
        raise ConfigError(f"{folder.parent.parent}: the run was trained on other data "
                          f"(hash {manifest.get('data_hash')} vs {data_hash}); choose another --out")
    try:
        state = torch.load(folder / TRAIN_STATE, map_location="cpu", weights_only=True)
        step, training, rng = int(state["step"]), state["generator"], state["torch_rng"]
    except Exception as exc:  # noqa: BLE001 - truncated or garbled: torch raises several types
        first_line = (str(exc).splitlines() or [""])[0][:120]
        raise CheckpointError(f"{folder / TRAIN_STATE}: unreadable training state "
                              f"({type(exc).__name__}: {first_line})") from None
    gen.load_state_tensors(tensors, where=str(folder))
    gen.to(device)
    gen.step = step
    gen.load_training_state(training)
    torch.set_rng_state(rng)
    if device.type == "cuda" and state.get("cuda_rng"):
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def changed_settings(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``name: old -> new`` for every setting that differs; nested ones (the model config) by their own name."""
    changed = []
    for key in wanted:
        if key == "seed":
            continue
        new, old = json.loads(json.dumps(wanted[key])), saved.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
        else:
            changed.append(f"{key}: {old!r} -> {new!r}")
    return changed
