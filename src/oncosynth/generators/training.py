"""The training loop every step-trained generator shares.

What it guarantees:

* a checkpoint every ``checkpoint_every`` steps and at the end, written to
  ``run/checkpoints/step-NNNNNNN/`` (weights as safetensors, config.json last,
  plus ``train_state.pt``: optimiser states and the torch RNG states);
* resume: a run restarted on the same folder continues from its newest
  complete checkpoint, and on CPU ends with bitwise the same weights as an
  uninterrupted run (all training randomness comes from the global torch RNG,
  whose state is saved; sample grids use their own generator);
* divergence: a NaN/inf loss, or NaN/inf weights at a checkpoint, stops the run
  with :class:`TrainingDiverged`; the last good checkpoint is kept;
* progress: a tqdm bar (step, losses, images/s, time left), ``log.jsonl``,
  sample grids in ``run/samples/``, TensorBoard when asked for and installed.

At the end the final model is also written to the run folder itself, so
``load_generator(run)`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oncosynth.data.transforms import convert_images, to_uint8
from oncosynth.parallel.distributed import (SINGLE, DistContext, average_gradients_before_step, broadcast_parameters,
                                   globalise_batchnorm, init_distributed, shutdown)
from oncosynth.errors import ConfigError, OncosynthError
from oncosynth.generators.base import Generator
from oncosynth.generators.registry import latest_checkpoint
from oncosynth.data.lineage import describe_records
from oncosynth.generators.resume import TRAIN_STATE, resume_newest_intact
from oncosynth.io import atomic_write, check_output_folder, cut_log, save_grid
from oncosynth.runtime.devices import resolve_device
from oncosynth.runtime.manifest import make_manifest
from oncosynth.runtime.run_threads import RunThreads
from oncosynth.runtime.seeding import seed_everything

log = logging.getLogger("oncosynth.generators")


class TrainingDiverged(OncosynthError):
    """A loss or a weight became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainingData:
    """Training images as uint8 N×C×H×W (kept on CPU), int64 labels and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    data_hash: str
    source: str = ""
    records: list | None = None  # the Records behind the images, when read from a Dataset (for the manifest)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def native_size(self) -> int:
        return int(max(self.images.shape[-2:]))


def next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def tensor_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256()
    digest.update(images.contiguous().cpu().numpy().tobytes())
    digest.update(labels.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_data(data: Any, classes: list[str] | None = None, size: int | None = None,
                 channels: int | None = None) -> TrainingData:
    """Turn a Dataset / (images, labels, classes) tuple / TrainingData into uint8 tensors.

    ``classes`` picks (and orders) the classes to train on; ``size`` resamples
    the images to ``size``×``size``; ``channels`` converts grey <-> RGB.
    """
    if isinstance(data, TrainingData):
        prepared = data
    elif isinstance(data, tuple) and len(data) == 3:
        images, labels, names = data
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            images = to_uint8(images)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if images.ndim != 4 or len(images) != len(labels):
            raise ConfigError(f"expected images N×C×H×W and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}")
        prepared = TrainingData(images, labels, list(names), tensor_hash(images, labels), "tensors")
    else:
        prepared = _from_dataset(data, size, channels)

    if classes:
        missing = [c for c in classes if c not in prepared.classes]
        if missing:
            raise ConfigError(f"--classes {missing} not in the data set's classes {prepared.classes}")
        old = [prepared.classes.index(c) for c in classes]
        keep = torch.isin(prepared.labels, torch.tensor(old))
        remap = torch.full((len(prepared.classes),), -1, dtype=torch.long)
        remap[torch.tensor(old)] = torch.arange(len(classes))
        records = None if prepared.records is None else [r for r, k in zip(prepared.records, keep.tolist()) if k]
        prepared = TrainingData(prepared.images[keep], remap[prepared.labels[keep]], list(classes),
                                prepared.data_hash + ":" + ",".join(classes), prepared.source, records)
    present = [c for i, c in enumerate(prepared.classes) if bool((prepared.labels == i).any())]
    if len(prepared.images) == 0:
        raise ConfigError(f"{prepared.source or 'training data'}: no images to train on")
    if present != prepared.classes:
        raise ConfigError(f"{prepared.source or 'training data'}: classes {sorted(set(prepared.classes) - set(present))} "
                          f"have no training images; pick others with --classes")

    images = prepared.images
    if (channels is not None and images.shape[1] != channels) or (
            size is not None and tuple(images.shape[-2:]) != (size, size)):
        images = convert_uint8(images, size, channels)
    if images is not prepared.images:
        prepared = TrainingData(images, prepared.labels, prepared.classes,
                                f"{prepared.data_hash}:{images.shape[1]}x{size}", prepared.source, prepared.records)
    return prepared


def convert_uint8(images: torch.Tensor, size: int | None, channels: int | None, chunk: int = 256) -> torch.Tensor:
    """``convert_images`` for uint8 images, in chunks to bound memory."""
    out = []
    for start in range(0, len(images), chunk):
        part = convert_images(images[start:start + chunk].float() / 255, size, channels)
        out.append(to_uint8(part))
    return torch.cat(out)


def split_leakage(data: Any, allow: bool) -> list[dict]:
    """For a Dataset with a train split: the patients in two splits (a DataError naming them unless
    ``allow``). Tensors carry no patients: nothing to check."""
    from oncosynth.data import Dataset
    from oncosynth.data.splits import guard_leakage

    if not isinstance(data, Dataset) or "train" not in data.splits:
        return []
    return guard_leakage(data, allow=allow, how_to_allow="pass --allow-leakage (allow_leakage=True)")


def _from_dataset(dataset: Any, size: int | None, channels: int | None) -> TrainingData:
    try:
        from oncosynth.data import Dataset, cached_tensors, load_images
        from oncosynth.data.decode import describe_sizes
    except ImportError as exc:  # the data layer is a sibling package; say clearly if it is missing
        raise ConfigError(f"cannot read a data set: oncosynth.data is unavailable ({exc})") from None
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"training data must be an oncosynth Dataset, an (images, labels, classes) tuple "
                          f"or TrainingData, not {type(dataset).__name__}")
    if "train" in dataset.splits:
        dataset = dataset.split("train")
    if len(dataset) == 0:
        raise ConfigError(f"{dataset.root}: the data set has no images")
    if size is None or channels is None:
        probe = load_images(dataset.subset(dataset.records[:1]))
        channels = channels or int(probe.shape[1])
        if size is None:
            size = int(max(probe.shape[-2:]))
            count, shown = describe_sizes(dataset.records)
            if count > 1:
                log.warning("%s: the training images come in %d sizes (%s); all are resampled to %d px, the "
                            "larger side of the first image (%s); --size chooses", dataset.root, count, shown,
                            size, dataset.records[0].uid)
    images, labels = cached_tensors(dataset, size, channels)
    return TrainingData(images, labels.long(), list(dataset.classes), f"{dataset.identity()}:{channels}x{size}",
                        str(dataset.root), list(dataset.records))


# ---------------------------------------------------------------- the loop ----
def run_training(gen: Generator, data: Any, run_folder: str | Path, steps: int, *,
                 batch_size: int | None = None, seed: int = 0, device: str | torch.device = "auto",
                 resume: bool = True, checkpoint_every: int | None = None, sample_every: int | None = None,
                 log_every: int = 10, tensorboard: bool = False, progress: bool = True,
                 classes: list[str] | None = None, keep_checkpoints: int = 2,
                 distributed: bool = False, allow_leakage: bool = False) -> Generator:
    """Train ``gen`` until it has taken ``steps`` steps, checkpointing into ``run_folder``.

    A data set whose splits share a patient stops here, before any work (a generator trained on the
    train split would otherwise copy test patients into synthetic training data), unless
    ``allow_leakage``; then the manifest lists those patients under ``leakage``.

    ``distributed=True`` (under ``torchrun``): data-parallel over the launched processes,
    ``batch_size`` being the global batch; see :mod:`oncosynth.parallel.distributed`.
    """
    run = check_output_folder(Path(run_folder), "--out")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, not {steps}")
    batch_size = int(batch_size or gen.config.get("batch_size", 16))
    context = SINGLE
    if distributed:
        if not getattr(gen, "supports_distributed", False):
            raise ConfigError(f"{gen.name}: --distributed is not implemented for this generator "
                              f"(its per-layer noise and augmentation statistics are not split over ranks); "
                              f"use cdcgan, or train on one process")
        context, device_t = init_distributed(device, batch_size)  # torchrun env, batch divisible: before work
    else:
        device_t = resolve_device(device)  # the one place a run's --device becomes a torch.device
    progress = progress and context.is_main
    checkpoint_every = int(checkpoint_every or max(1, min(steps, 500)))
    writer = _tensorboard_writer(run) if tensorboard and context.is_main else None  # fail before any work

    latest = latest_checkpoint(run)
    if latest is not None and not resume:
        raise ConfigError(f"{run} already holds a training run (checkpoint {latest.name}); "
                          f"resume it or choose another --out (nothing was overwritten)")

    # Data first: its size, channels and classes fix the networks.
    leakage = split_leakage(data, allow_leakage)
    target = gen.config.get("size")
    if target is not None:
        gen.check_size(int(target))
    prepared = prepare_data(data, classes=classes or None, channels=gen.config.get("channels"))
    if target is None:
        native = prepared.native_size
        target = max(next_power_of_two(native), 32)
        if target != native:
            why = "the model needs a power of two" if target == next_power_of_two(native) else \
                "32 px is the smallest the model builds"
            log.warning("%s: images are %d px; resampled to %d px (%s; --size chooses)", gen.name, native, target, why)
    prepared = prepare_data(prepared, size=int(target))

    gen.device = device_t
    seed_everything(seed)
    gen.configure(prepared.classes, prepared.channels, int(target))
    gen.class_counts = torch.bincount(prepared.labels, minlength=len(prepared.classes))  # fake-label draws
    config = gen.checkpoint_config()
    run_config = {"method": gen.name, "preset": gen.preset, "config": gen.config, "classes": gen.classes,
                  "channels": gen.channels, "size": gen.size, "batch_size": batch_size, "seed": seed}
    manifest = make_manifest(config["kind"], run_config, seed=seed, data_hash=prepared.data_hash,
                             data_source=prepared.source, n_train=len(prepared.images),
                             **({"leakage": leakage} if leakage else {}))
    if prepared.records is not None:  # what it saw, by name: a study compares this with its own splits
        manifest["training_data"] = describe_records(prepared.records)

    if latest is not None:
        latest = resume_newest_intact(gen, run, run_config, prepared.data_hash, device_t)
        if latest is None:  # every checkpoint was damaged: start again exactly as a new run would
            seed_everything(seed)
            gen.step = 0
            gen.configure(prepared.classes, prepared.channels, int(target))
        else:
            log.info("%s: resuming from %s", gen.name, latest)
    if context.is_main:
        run.mkdir(parents=True, exist_ok=True)
        cut_log(run / "log.jsonl", gen.step)  # steps after the checkpoint are logged again
    if context.active:
        _distribute(gen, context)
    gen.manifest = manifest

    images, labels = prepared.images, prepared.labels
    if device_t.type == "cuda" and images.numel() < 2**31:
        images, labels = images.to(device_t), labels.to(device_t)
    grid_z = torch.randn(len(gen.classes) * 8, gen.z_dim, generator=torch.Generator().manual_seed(seed + 12345))
    grid_labels = torch.arange(len(gen.classes)).repeat_interleave(8)

    bar = _progress_bar(steps, gen.step, gen.name) if progress else None
    last_good = latest.name if latest is not None else None
    window_start, window_steps = time.perf_counter(), 0
    img_per_s = float("nan")
    threads = RunThreads(run, write=context.is_main)  # a resume keeps the count the run started with
    manifest["threads"] = threads.count
    try:
        while gen.step < steps:
            idx = torch.randint(len(images), (batch_size,)).to(images.device)
            reals = images[idx].to(device_t, non_blocking=True).float() / 127.5 - 1
            losses = gen.train_step(reals, labels[idx].to(device_t))
            gen.step += 1
            window_steps += 1
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                raise TrainingDiverged(_diverged_message(gen, f"loss {bad}", run, last_good))

            if gen.step % log_every == 0 or gen.step == steps:
                elapsed = time.perf_counter() - window_start
                img_per_s = window_steps * batch_size / max(elapsed, 1e-9)
                eta = (steps - gen.step) * batch_size / img_per_s
                record = {"step": gen.step, **{k: round(v, 5) for k, v in losses.items()},
                          "img_per_s": round(img_per_s, 2), "eta_s": round(eta, 1)}
                if context.is_main:
                    _append_log(run / "log.jsonl", record)
                if writer is not None:
                    for key, value in losses.items():
                        writer.add_scalar(f"loss/{key}", value, gen.step)
                    writer.add_scalar("speed/img_per_s", img_per_s, gen.step)
                window_start, window_steps = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in losses.items()}, "img/s": f"{img_per_s:.1f}"},
                                refresh=False)  # the bar redraws at its own interval

            if gen.step % checkpoint_every == 0 or gen.step == steps:
                if not _weights_finite(gen):
                    raise TrainingDiverged(_diverged_message(gen, "NaN/inf weights", run, last_good))
                if context.is_main:
                    last_good = _write_checkpoint(gen, run, manifest, keep_checkpoints).name
                context.barrier()  # a rank that resumes later finds the checkpoint complete
            if context.is_main and sample_every and (gen.step % sample_every == 0 or gen.step == steps):
                grid = _sample_grid(gen, grid_z, grid_labels)
                save_grid(grid, run / "samples" / f"step-{gen.step:07d}.png", nrow=8)
                if writer is not None:
                    writer.add_images("samples", grid, gen.step)
    finally:
        threads.restore()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    if context.is_main:
        gen.save(run, manifest)
    if context.active:
        gen.data_shard = SINGLE
        shutdown(context)
    return gen


def _distribute(gen: Generator, context: DistContext) -> None:
    """Global-batch BatchNorm, rank 0's weights everywhere, gradients averaged before each step."""
    nets = gen.networks()
    for net in nets.values():
        globalise_batchnorm(net)
    broadcast_parameters(nets.values(), context)
    for optimizer in gen.optimizers():
        average_gradients_before_step(optimizer, context)
    gen.data_shard = context


def _diverged_message(gen: Generator, what: str, run: Path, last_good: str | None) -> str:
    kept = (f"the last good checkpoint ({run / 'checkpoints' / last_good}) is kept; resume from it with a lower "
            f"learning rate or another seed" if last_good else "no checkpoint had been written yet")
    return f"{gen.name}: training diverged at step {gen.step} ({what}); {kept}"


def _weights_finite(gen: Generator) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in gen.state_tensors().values() if t.is_floating_point())


def _write_checkpoint(gen: Generator, run: Path, manifest: dict[str, Any], keep: int) -> Path:
    folder = run / "checkpoints" / f"step-{gen.step:07d}"
    if folder.exists():  # a half-written folder from a killed run
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    state = {"step": gen.step, "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "generator": gen.training_state()}
    with atomic_write(folder / TRAIN_STATE) as handle:
        torch.save(state, handle)
    gen.save(folder, manifest)  # config.json is written last: it marks the checkpoint complete
    done = sorted(p for p in (run / "checkpoints").glob("step-*") if (p / "config.json").is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


@torch.no_grad()
def _sample_grid(gen: Generator, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    nets = gen.networks()
    modes = {k: n.training for k, n in nets.items()}
    for net in nets.values():
        net.eval()
    try:
        with torch.random.fork_rng(devices=[gen.device] if gen.device.type == "cuda" else []):
            images = gen.generate(z.to(gen.device), labels.to(gen.device))  # must not move the training RNG
    finally:
        for k, net in nets.items():
            net.train(modes[k])
    return ((images.float().cpu() + 1) / 2).clamp(0, 1)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _progress_bar(total: int, initial: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {name}", unit="step", dynamic_ncols=True)


def _tensorboard_writer(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("TensorBoard logging was asked for, but the 'tensorboard' package is not installed "
                          "(pip install tensorboard), or leave out --tensorboard") from None
    return SummaryWriter(log_dir=str(run / "tensorboard"))
