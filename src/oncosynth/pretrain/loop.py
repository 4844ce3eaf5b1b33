"""``oncosynth pretrain``: train a backbone without natural-image weights, resumably.

The run folder holds, once finished, a checkpoint of kind
``pretrained-backbone`` (``weights.safetensors`` with ``backbone.*`` keys,
``config.json``, ``manifest.json`` naming every image source and its
patients), which a study loads with ``model.pretrained: RUN`` and
``create_classifier(pretrained=RUN)``. While it runs, ``train_state.pt``
(tensors and plain values only, read with ``weights_only=True``) is written
every ``checkpoint_every`` steps; a re-run of the same command continues from
it and ends with the same weights as an uninterrupted run. A damaged state,
settings record or finished backbone is set aside (renamed, never deleted) and
the run restarts, or rewrites the backbone from its final state.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from oncosynth.checkpoint import CONFIG, MANIFEST, WEIGHTS, load_checkpoint, save_checkpoint
from oncosynth.classifiers.model import create_classifier
from oncosynth.classifiers.normalise import InputNorm
from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.io import atomic_write, check_output_folder, cut_log, set_aside, write_json
from oncosynth.pretrain.data import gather_images
from oncosynth.pretrain.methods import METHODS, create_method
from oncosynth.pretrain.views import ViewConfig
from oncosynth.runtime import hash_strings, make_manifest, seed_everything
from oncosynth.runtime.run_threads import RunThreads

KIND = "pretrained-backbone"
STATE = "train_state.pt"
SETTINGS = "settings.json"
LOG = "log.jsonl"


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "simclr"
    backbone: str = "resnet18"
    size: int = Field(64, ge=16)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(100, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(20, ge=1)
    phantom_images: int = Field(2000, ge=10, description="phantom-supervised without --data")
    # The classifier that fine-tunes the backbone should normalise its inputs the same way
    # (train.normalise): features learned on raw grey levels see other inputs after a per-image stretch.
    normalise: InputNorm = Field("none", description="per-image input normalisation, as the classifier's")
    options: dict[str, Any] = Field(default_factory=dict, description="method options, e.g. temperature")
    views: ViewConfig = ViewConfig()


def make_config(**values: Any) -> PretrainConfig:
    """A validated config; a bad value is one ConfigError naming the setting."""
    try:
        return PretrainConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"pretrain settings: {problems}") from None


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _check_settings(out: Path, settings: dict) -> None:
    """Record the run's settings, or refuse other ones. A damaged record is set aside (renamed, never
    deleted) with the resume state, whose settings it alone could confirm: the run starts again."""
    path = out / SETTINGS
    if path.is_file():
        try:
            before = json.loads(path.read_text())
            if not isinstance(before, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            set_aside(path, f"damaged settings record ({exc}); the run starts again")
            if (out / STATE).is_file():
                set_aside(out / STATE, f"resume state of a run whose settings record is damaged ({path.name})")
        else:
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if changed:
                raise ConfigError(f"{out}: holds a pretraining run with other settings "
                                  f"(changed: {', '.join(changed)}); use another --out")
            return
    write_json(path, settings)


def _finished(out: Path, settings: dict) -> bool:
    """True when ``out`` holds the finished backbone of these settings; a damaged one is set aside
    (its files renamed, never deleted) and the run continues from its resume state."""
    if not (out / CONFIG).is_file():
        return False
    try:
        _, _, manifest = load_checkpoint(out, kind=KIND)
        if manifest.get("config") != json.loads(json.dumps(settings)):
            raise CheckpointError(f"{out / MANIFEST}: its settings differ from {SETTINGS}")
    except CheckpointError as exc:
        for name in (CONFIG, MANIFEST, WEIGHTS):
            if (out / name).is_file():
                set_aside(out / name, f"part of a damaged finished backbone ({exc}); it is written again")
        return False
    return True


_STATE_KEYS = ("method", "optimizer", "scheduler", "generator", "torch_rng", "step")  # cpu_seconds: optional


def _load_state(path: Path) -> dict | None:
    """The resume state, or None: absent, or damaged (then set aside and the run starts from step 0)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in _STATE_KEYS if k not in state] if isinstance(state, dict) else ["everything"]
        if missing:
            raise ValueError(f"incomplete (missing {missing})")
    except Exception as exc:  # noqa: BLE001 - truncated or garbled: torch raises several types
        first_line = (str(exc).splitlines() or [""])[0][:120]
        set_aside(path, f"damaged resume state ({type(exc).__name__}: {first_line}); starting from step 0")
        return None
    return state


def pretrain(config: PretrainConfig, out: str | Path, data: str | Path | None = None,
             extra_unlabelled: list[str | Path] | None = None, device: torch.device = torch.device("cpu"),
             progress: bool = True) -> Path:
    """Pretrain ``config.backbone`` with ``config.method``; returns the finished run folder."""
    if config.method not in METHODS:
        raise ConfigError(f"unknown pretrain method '{config.method}'; known: {', '.join(sorted(METHODS))}")
    out = check_output_folder(Path(out), "--out")  # before any image is read
    extra = [str(Path(p)) for p in (extra_unlabelled or [])]
    supervised = METHODS[config.method].supervised
    pool = gather_images(data, extra, config.size, supervised, config.phantom_images, config.seed,
                         progress=progress)
    data_hash = hash_strings([s.get("data_hash", json.dumps(s.get("phantom"))) for s in pool.sources])
    settings = {"config": config.model_dump(mode="json"), "data": str(data) if data else None,
                "extra_unlabelled": extra, "data_hash": data_hash}
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    if _finished(out, settings):
        return out
    with RunThreads(out) as threads:  # a resumed run keeps the thread count it started with
        _train(config, out, pool, settings, device, progress, threads)
    return out


def _train(config: PretrainConfig, out: Path, pool, settings: dict, device: torch.device, progress: bool,
           threads: int) -> None:
    """The training loop of :func:`pretrain`, from a fresh start or its resume state, to the saved backbone."""
    supervised = METHODS[config.method].supervised
    seed_everything(config.seed)
    channels = pool.images.shape[1]
    model = create_classifier(config.backbone, in_chans=channels, num_classes=max(2, len(pool.classes)),
                              img_size=config.size, classes=None if not supervised else pool.classes)
    model.set_input_handling(config.normalise)
    method = create_method(config.method, model, config.steps, config.views, **config.options).to(device)
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, config.steps, config.warmup_steps))
    generator = torch.Generator().manual_seed(config.seed)

    step, cpu_before = 0, 0.0  # CPU seconds of earlier sessions of this run (a resume adds to them)
    state = _load_state(out / STATE)
    if state is not None:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        cpu_before = float(state.get("cpu_seconds", 0.0))
    cpu_start = time.process_time()

    def cpu_seconds() -> float:
        return cpu_before + time.process_time() - cpu_start
    cut_log(out / LOG, step)  # steps after the resume state are logged again

    method.train()
    bar = tqdm(total=config.steps, initial=step, desc=f"pretrain {config.method}", unit="step",
               disable=not progress)
    n = len(pool.images)
    batch = min(config.batch_size, n)
    while step < config.steps:
        index = torch.randperm(n, generator=generator)[:batch]
        images = pool.images[index].to(device, torch.float32) / 255.0
        labels = pool.labels[index].to(device) if pool.labels is not None else None
        loss = method.loss(images, labels, generator, step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(f"{out}: pretraining diverged at step {step} (loss {value}); "
                              f"lower the learning rate (--lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        method.after_step(step)
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            bar.set_postfix(loss=f"{value:.4f}")
            with open(out / LOG, "a") as handle:
                handle.write(json.dumps({"step": step, "loss": value, "lr": scheduler.get_last_lr()[0],
                                         "cpu_seconds": cpu_seconds()}) + "\n")
        if step % config.checkpoint_every == 0 or step == config.steps:
            with atomic_write(out / STATE) as handle:
                torch.save({"method": method.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state(), "step": step,
                            "cpu_seconds": cpu_seconds()}, handle)
    bar.close()

    tensors = {f"backbone.{k}": v for k, v in method.backbone.state_dict().items()}
    checkpoint_config = {"kind": KIND, "backbone": config.backbone, "in_chans": channels,
                         "img_size": config.size, "method": config.method, "steps": config.steps,
                         "input_norm": config.normalise,
                         "cpu_seconds": round(cpu_seconds(), 1)}
    manifest = make_manifest(KIND, settings, seed=config.seed, data_hash=settings["data_hash"], sources=pool.sources,
                             threads=threads)
    save_checkpoint(out, tensors, checkpoint_config, manifest)


def initialisation_of(pretrained: str | None) -> str:
    """How a classifier starts, in words for a report: scratch, natural-image or which pretraining."""
    if pretrained is None:
        return "scratch (random initialisation)"
    if str(pretrained) == "timm":
        return "natural-image weights (timm hub)"
    path = Path(pretrained)
    config_path = path / CONFIG if path.is_dir() else None
    if config_path is None or not config_path.is_file():
        return f"weights file {path.name}"
    try:
        config = json.loads(config_path.read_text())
        manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"checkpoint {path.name} (unreadable config)"
    if config.get("kind") != KIND:
        return f"{config.get('kind', 'checkpoint')} {path.name}"
    sources = ", ".join(f"{Path(s['path']).name} ({s['role']}, {s['images']} images)"
                        for s in manifest.get("sources", []))
    kind = "supervised on" if METHODS.get(config["method"]) and METHODS[config["method"]].supervised \
        else "self-supervised on"
    return f"{config['method']} ({kind} {sources or 'unknown images'}, {config['steps']} steps)"
