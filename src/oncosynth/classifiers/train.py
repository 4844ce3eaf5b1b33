"""Training a classifier on in-memory uint8 tensors, optionally under DP-SGD.

The loop is deliberately plain: indices -> batch to device -> /255 ->
augment -> forward/backward -> AdamW step with a warm-up + cosine schedule.
The budget is ``epochs`` (passes over this arm's training set) or, with
``steps`` set, a number of optimiser steps -- the same for every arm of a
study whatever its data size. After every epoch, or every ``eval_every``
steps, the validation score (AUROC or AUPRC) decides whether the weights are
the best so far (optionally stopping after ``patience`` evaluations without
improvement), and the whole training state is written to ``state_dir`` so a
killed run resumes from the last evaluation. Batches come from
``oncosynth.classifiers.sampling`` (class oversampling, real/synthetic mix).

DP-SGD (opacus): Poisson-sampled batches, per-sample clipping to
``max_grad_norm`` and noise calibrated so that the planned epochs spend the
target epsilon at ``delta`` (over the planned epochs, or over exactly
``steps`` noisy steps, so arms with equal steps spend equal epsilon with noise
calibrated to each arm's sampling rate). A trainable backbone is rebuilt for opacus'
hooks by ``Classifier.prepare_for_dp`` (GroupNorm, no in-place edits of
hooked outputs; measured 1.6x faster than ``grad_sample_mode="ew"``); a
frozen backbone only privatises the head.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from oncosynth.classifiers.augment import AugmentConfig, augment_batch
from oncosynth.classifiers.model import Classifier
from oncosynth.classifiers.sampling import BatchPlan
from oncosynth.classifiers.scores import selection_score
from oncosynth.parallel.distributed import SINGLE, DistContext, broadcast_parameters, check_batch, globalise_batchnorm
from oncosynth.heap import keep_freed_memory
from oncosynth.errors import CheckpointError, ConfigError
# the recipe options (normalisation, TTA, mixing, EMA, one-cycle): classifiers/recipe.py
from oncosynth.classifiers.normalise import predict_batch_proba
from oncosynth.classifiers.recipe import RecipeOptions, prepare_recipe, recipe_scheduler
from oncosynth.classifiers.regularise import mix_batch

STATE_FILE = "train_state.pt"


class DPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(gt=0)
    delta: float = Field(1e-4, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    # fixed noise instead of the noise that meets `epsilon`; the ε spent is then the accountant's answer
    noise_multiplier: float | None = Field(None, gt=0)


class TrainConfig(RecipeOptions):  # recipe fields (normalise, mixup, ema, tta, schedule, presets): recipe.py
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: bool = True
    augmentations: AugmentConfig = AugmentConfig()
    balance: Literal["none", "weighted", "oversample"] = "none"
    select_on: Literal["auroc", "auprc"] = "auroc"
    eval_batch_size: int = Field(256, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="stop after the epoch that passes this wall time")
    steps: int | None = Field(None, ge=1, description="optimiser steps (replaces epochs): equal budgets across arms")
    eval_every: int | None = Field(None, ge=1, description="with steps: validate every N steps (default steps/10)")
    warmup_steps: int | None = Field(None, ge=0, description="with steps: LR warm-up steps (default 5% of steps)")
    patience: int | None = Field(None, ge=1, description="stop after this many evaluations without improvement")


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    epsilon_spent: float | None = None
    noise_multiplier: float | None = None
    seconds: float = 0.0
    train_images_per_second: float = 0.0
    stopped_early: str | None = None
    best_step: int = 0
    steps_run: int = 0
    images_real: int = 0
    images_synthetic: int = 0
    budget: str = "epochs"


# ----------------------------------------------------------- prediction ----
@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N×K numpy) for uint8 or float [0, 1] images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_float(images[start : start + batch_size], device)
        out.append(predict_batch_proba(model, batch).cpu())  # flip TTA when the model asks for it
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def to_float(batch: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    return batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()


# ------------------------------------------------------------- schedule ----
def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
    return counts.sum() / (num_classes * counts)


# ----------------------------------------------------------------- loop ----
def train_classifier(model: Classifier, train: tuple[torch.Tensor, torch.Tensor],
                     val: tuple[torch.Tensor, torch.Tensor], config: TrainConfig, seed: int = 0,
                     device: torch.device | str = "cpu", positive: int = 1, dp: DPConfig | None = None,
                     state_dir: str | Path | None = None,
                     progress: Callable[[dict], None] | None = None,
                     context: DistContext = SINGLE, n_synthetic: int = 0, mix: float | None = None) -> TrainResult:
    """Train ``model`` in place and leave the best-validation weights in it.

    ``train``/``val`` are (images uint8 N×C×H×W, labels int64); the last ``n_synthetic`` rows of
    ``train`` are synthetic, and ``mix`` is their expected share of each batch (default: their
    share of the rows). With ``state_dir`` the run resumes from its last evaluation.

    ``context`` (from :func:`oncosynth.parallel.distributed.init_distributed`, under torchrun): the
    model is wrapped in ``DistributedDataParallel``, ``config.batch_size`` is the global batch
    of which each rank trains on rows ``rank::world``, BatchNorm uses global-batch statistics,
    and only rank 0 writes the resume state.
    """
    device = torch.device(device)
    images, labels = train
    num_classes = len(model.classes)
    if len(images) < 2:
        raise ConfigError("training set has fewer than 2 images")
    if context.active:
        if dp is not None:
            raise ConfigError("DP-SGD (opacus) is not combined with --distributed: train private cells "
                              "on one process each (e.g. --executor ray spreads them over GPUs)")
        check_batch(config.batch_size, context.world_size)
    if dp is not None and config.balance == "oversample":
        raise ConfigError("oversampling repeats records, which DP accounting does not cover; "
                          "use balance 'weighted' or 'none' with DP-SGD")
    if dp is not None and mix is not None:
        raise ConfigError("a synthetic mix is not combined with DP-SGD: Poisson sampling draws every record "
                          "with the same probability (leave synthetic.mix unset)")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if dp is not None and not model.freeze_backbone:
        model.prepare_for_dp()
    model.to(device)
    ema = prepare_recipe(model, config, dp, context.active)  # recipe: normalisation/TTA on the model, EMA

    if context.active:
        globalise_batchnorm(model)
        broadcast_parameters([model], context)
        step_module = _data_parallel(model, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    weight = class_weights(labels, num_classes).to(device) if config.balance == "weighted" else None
    # without DP the last partial batch is dropped; opacus' Poisson loader makes ceil(N / batch) steps
    steps_per_epoch = max(1, len(images) // config.batch_size) if dp is None else \
        math.ceil(len(images) / config.batch_size)
    if config.steps is not None:  # a step budget: evaluate every eval_every steps
        total_steps = config.steps
        chunk = config.eval_every or max(1, math.ceil(total_steps / 10))
        warmup_steps = config.warmup_steps if config.warmup_steps is not None else round(0.05 * total_steps)
    else:
        total_steps, chunk = steps_per_epoch * config.epochs, steps_per_epoch
        warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    n_chunks = math.ceil(total_steps / chunk)
    plan = BatchPlan(labels, config.batch_size, num_classes, n_synthetic, mix, config.balance == "oversample")
    engine, dp_loader = None, None
    if not context.active:
        step_module = model
    if dp is not None:
        engine, step_module, optimizer, dp_loader = _make_private(model, optimizer, images, labels, config, dp,
                                                                  config.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # opacus' DPOptimizer wraps the AdamW it drives
        getattr(optimizer, "original_optimizer", optimizer), lambda s: warmup_cosine(s, total_steps, warmup_steps))
    scheduler = recipe_scheduler(scheduler, optimizer, config, total_steps)  # recipe: one-cycle in its place

    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
    start_epoch, best = 0, {"score": -math.inf, "epoch": -1, "step": 0, "weights": None}
    history: list[dict] = []
    train_seconds, train_images, seen_synthetic = 0.0, 0, 0
    saved = _read_state(state_path, ema) if state_path is not None and state_path.is_file() else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if engine is not None:
            engine.accountant.history = [tuple(h) for h in saved["accountant"]]
        start_epoch, history = saved["epoch"], saved["history"]
        best = {"score": saved["best_score"], "epoch": saved["best_epoch"], "step": saved.get("best_step", 0),
                "weights": saved["best"]}
        train_seconds, train_images = saved["train_seconds"], saved["train_images"]
        seen_synthetic = saved.get("seen_synthetic", 0)  # absent in states written before step budgets
        if "plan" in saved:
            plan.load_state_dict(saved["plan"])

    started = time.perf_counter()
    stopped_early = None
    dp_iter = None
    for epoch in range(start_epoch, n_chunks):  # an "epoch" here is one evaluation period
        model.train()
        epoch_start, seen, loss_sum = time.perf_counter(), 0, 0.0
        chunk_steps = min(chunk, total_steps - epoch * chunk)
        if dp_loader is not None:
            dp_iter = dp_iter if config.steps is not None and dp_iter is not None else _dp_batches(dp_loader)
            batches = _take(dp_iter, dp_loader, chunk_steps) if config.steps is not None else dp_iter
        else:
            if config.steps is None:
                plan.start_epoch(chunk_steps, generator)
            batches = _plan_batches(images, labels, plan, generator, chunk_steps)
        for xb, yb, n_syn in batches:
            seen_synthetic += n_syn
            xb, yb = to_float(xb, device), yb.to(device, non_blocking=True)
            if config.augment:
                xb = augment_batch(xb, config.augmentations, generator)
            xb, targets = mix_batch(xb, yb, num_classes, config.mixup, config.cutmix, config.mix_prob, generator)
            if context.active:  # every rank drew (and augmented) the global batch; keep this rank's rows
                denominator = weight[yb].sum() if weight is not None else torch.tensor(float(len(yb)))
                xb, yb = context.share(xb), context.share(yb)
            optimizer.zero_grad(set_to_none=True)  # before forward: opacus keeps per-sample grads
            if dp is not None and model.freeze_backbone:
                with torch.no_grad():
                    feats = model.features(xb)
                logits = step_module(feats)
            else:
                logits = step_module(xb)
            if context.active:  # DDP averages over ranks: world * (local sum) / (global count) -> global mean
                loss = F.cross_entropy(logits, yb, weight=weight, label_smoothing=config.label_smoothing,
                                       reduction="sum") * (context.world_size / denominator.to(device))
            else:
                loss = F.cross_entropy(logits, targets, weight=weight, label_smoothing=config.label_smoothing)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:  # recipe
                ema.update(model)
            seen += len(yb)
            loss_sum += float(loss.detach()) * len(yb)
        epoch_seconds = time.perf_counter() - epoch_start
        if ema is not None:  # recipe: validate (and select) the EMA weights
            ema.swap_in(model)
        train_seconds += epoch_seconds
        train_images += seen

        step = min(total_steps, (epoch + 1) * chunk)
        probs = predict_proba(model, val[0], device, config.eval_batch_size)
        score = selection_score(val[1].numpy(), probs, positive, config.select_on)
        record = {"epoch": epoch + 1, "step": step, "loss": loss_sum / max(1, seen),
                  "val_" + config.select_on: score,
                  "seconds": epoch_seconds, "images_per_second": seen / max(epoch_seconds, 1e-9)}
        if engine is not None:
            record["epsilon"] = engine.get_epsilon(dp.delta)
        history.append(record)
        if not np.isnan(score) and score > best["score"]:
            best = {"score": score, "epoch": epoch + 1, "step": step,
                    "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        if ema is not None:  # recipe: back to the live weights; the shadow goes beside the resume state
            ema.swap_out(model)
            if state_path is not None and context.is_main:
                ema.save(state_path.parent, epoch + 1)
        if state_path is not None and context.is_main:
            _save_state(state_path, model, optimizer, scheduler, generator, engine, epoch + 1, history, best,
                        train_seconds, train_images, seen_synthetic, plan)
        if progress is not None:
            progress({"epoch": epoch + 1, "epochs": n_chunks, **record})
        if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes \
                and epoch + 1 < n_chunks:
            stopped_early = f"time cap of {config.max_minutes} min reached after step {step}"
            break
        if config.patience is not None and epoch + 1 - best["epoch"] >= config.patience and epoch + 1 < n_chunks:
            stopped_early = f"no validation gain in {config.patience} evaluations: stopped at step {step}"
            break

    if best["weights"] is not None:
        model.load_state_dict(best["weights"])
    model.eval()
    return TrainResult(
        best_epoch=best["epoch"], best_score=float(best["score"]), epochs_run=len(history), history=history,
        epsilon_spent=engine.get_epsilon(dp.delta) if engine is not None else None,
        noise_multiplier=float(optimizer.noise_multiplier) if engine is not None else None,
        seconds=train_seconds, train_images_per_second=train_images / max(train_seconds, 1e-9),
        stopped_early=stopped_early, best_step=best["step"], steps_run=history[-1]["step"] if history else 0,
        images_real=train_images - seen_synthetic, images_synthetic=seen_synthetic,
        budget="steps" if config.steps is not None else "epochs")


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel without the per-forward buffer broadcast (BatchNorm buffers agree
    already: GlobalBatchNorm2d gives every rank the same statistics)."""
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel
    try:
        return ddp(model, device_ids=device_ids, forward_sync_buffers=False)
    except TypeError:  # torch versions before the option was renamed
        return ddp(model, device_ids=device_ids, broadcast_buffers=False)


def _plan_batches(images, labels, plan: BatchPlan, generator, steps: int):
    for _ in range(steps):
        index = plan.next(generator)
        yield images[index], labels[index], plan.count_synthetic(index)


def _dp_batches(loader):
    # synthetic rows are not told apart under DP (Poisson sampling over all rows); counted as real
    for xb, yb in loader:
        if len(yb) == 0:  # Poisson sampling can draw an empty batch; it still counts for privacy
            continue
        yield xb, yb, 0


def _take(iterator, loader, steps: int):
    """``steps`` noisy batches from a Poisson loader, starting a new pass when one runs out."""
    for _ in range(steps):
        try:
            yield next(iterator)
        except StopIteration:
            iterator = _dp_batches(loader)  # noqa: PLW2901 - a fresh pass (Poisson draws are memoryless)
            yield next(iterator)


def _make_private(model: Classifier, optimizer, images, labels, config: TrainConfig, dp: DPConfig,
                  steps: int | None = None):
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier

    keep_freed_memory()  # per-image gradients: without it 40 % of a DP step was kernel time (heap.py)
    dataset = torch.utils.data.TensorDataset(images, labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=False)
    engine = PrivacyEngine(accountant="rdp")
    # opacus hooks the first layer, whose input (the images) needs no gradient: torch warns, harmlessly
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
    module = model.head if model.freeze_backbone else model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")
        if steps is None and dp.noise_multiplier is None:
            private_module, private_optimizer, private_loader = engine.make_private_with_epsilon(
                module=module, optimizer=optimizer, data_loader=loader, criterion=nn.CrossEntropyLoss(),
                target_epsilon=dp.epsilon, target_delta=dp.delta, epochs=config.epochs,
                max_grad_norm=dp.max_grad_norm, grad_sample_mode="hooks")
        else:  # a fixed noise, or the noise for exactly `steps` draws at this arm's sampling rate
            sigma = dp.noise_multiplier
            if sigma is None:
                sigma = get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=dp.delta,
                                             sample_rate=1 / len(loader), steps=steps, accountant="rdp")
            private_module, private_optimizer, private_loader = engine.make_private(
                module=module, optimizer=optimizer, data_loader=loader, criterion=nn.CrossEntropyLoss(),
                noise_multiplier=sigma, max_grad_norm=dp.max_grad_norm, grad_sample_mode="hooks")
    return engine, private_module, private_optimizer, private_loader


_STATE_KEYS = ("model", "optimizer", "scheduler", "generator", "torch_rng", "epoch", "history", "best",
               "best_score", "best_epoch", "train_seconds", "train_images", "accountant")


def _read_state(path: Path, ema=None) -> dict | None:
    """The resume state (``ema``: its shadow loaded), or None after setting a damaged one aside (restart)."""
    from oncosynth.io import set_aside

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in _STATE_KEYS if k not in saved] if isinstance(saved, dict) else ["everything"]
        problem = f"incomplete resume state (missing {missing})" if missing else None
    except Exception as exc:  # noqa: BLE001 - truncated or garbled: torch raises several types
        first_line = (str(exc).splitlines() or [""])[0][:120]
        problem = f"unreadable resume state ({type(exc).__name__}: {first_line})"
    if problem is None and ema is not None and saved["epoch"] > 0:
        try:
            ema.load(path.parent, saved["epoch"])  # all or nothing; a damaged EMA file is set aside there
        except CheckpointError as exc:
            problem = f"its EMA weights are unusable ({exc})"
    if problem is None:
        return saved
    set_aside(path, problem + "; training restarts from the first epoch")
    return None


def _save_state(path: Path, model, optimizer, scheduler, generator, engine, epoch, history, best,
                train_seconds, train_images, seen_synthetic, plan) -> None:
    from oncosynth.io import atomic_write

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
             "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history,
             "best": best["weights"], "best_score": float(best["score"]), "best_epoch": best["epoch"],
             "best_step": best["step"], "train_seconds": train_seconds, "train_images": train_images,
             "seen_synthetic": seen_synthetic, "plan": plan.state_dict(),
             "accountant": [list(h) for h in engine.accountant.history] if engine is not None else []}
    with atomic_write(path) as handle:
        torch.save(state, handle)
