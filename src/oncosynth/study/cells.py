"""One study cell: plan the grid, train and evaluate one cell, write and read its predictions.

A *cell* is one (arm, epsilon, fraction, seed). Each cell writes its predictions and
``metrics.json`` (the completion marker) under ``out/cells/<cell>/``; a re-run skips finished
cells and resumes an interrupted one from its last finished epoch.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncosynth.classifiers import DPConfig, create_classifier, predict_proba, save_classifier, train_classifier
from oncosynth.classifiers.scores import youden_threshold
from oncosynth.parallel.distributed import SINGLE, DistContext
from oncosynth.parallel.executor import Resources
from oncosynth.errors import ConfigError
from oncosynth.io import atomic_write, set_aside, write_json
from oncosynth.runtime.devices import resolve_device
from oncosynth.runtime.manifest import hash_strings, make_manifest
from oncosynth.runtime.run_threads import RunThreads
import oncosynth.study.stats as stats
from oncosynth.study.config import ArmConfig, StudyConfig
from oncosynth.study.inputs import Prepared, prepared_for
from oncosynth.study.in_study import cell_generator_key, generator_folder, is_trained, load_in_study
from oncosynth.study.provenance import cell_provenance, in_study_provenance
from oncosynth.study.synthetic import synthetic_for_cell


@dataclass
class Cell:
    arm: ArmConfig
    epsilon: float | None
    fraction: float
    seed: int

    @property
    def variant(self) -> str:
        """The arm as shown in tables: its name, plus the privacy budget (or the fixed noise) under DP."""
        if self.epsilon is None:
            return self.arm.name
        sigma = self.arm.dp_noise_multiplier
        return f"{self.arm.name} (DP ε={self.epsilon:g})" if sigma is None else f"{self.arm.name} (DP σ={sigma:g})"

    @property
    def id(self) -> str:
        eps = "nodp" if self.epsilon is None else f"eps{self.epsilon:g}"
        return re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{self.arm.name}__{eps}__f{self.fraction:g}__s{self.seed}")



MARKER = "metrics.json"


def read_marker(marker: Path) -> dict | None:
    """A finished cell's record, or None: absent, or damaged (then set aside, so the cell runs again)."""
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
        if not isinstance(record, dict) or "metrics" not in record:
            raise ValueError("not a cell record")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        set_aside(marker, f"damaged completion marker ({exc}); the cell runs again")
        return None
    return record


def plan_cells(config: StudyConfig) -> list[Cell]:
    cells = []
    for arm in config.arms:
        epsilons: list[float | None] = {"off": [None], "on": list(config.dp.epsilons),
                                        "both": [None, *config.dp.epsilons]}[arm.dp]
        for epsilon in epsilons:
            for fraction in config.fractions:
                for seed in config.seeds:
                    cells.append(Cell(arm, epsilon, fraction, seed))
    return cells


def cell_fingerprint(config: StudyConfig, cell: Cell) -> str:
    """Everything that decides a cell's result; a resumed study refuses cells made differently."""
    # an arm field added later is left out at its default, so studies made before it still resume
    later: dict = {}
    if cell.arm.dp_noise_multiplier is None:
        later["dp_noise_multiplier"] = True
    if cell.arm.synthetic is not None and not cell.arm.synthetic.sample:
        later["synthetic"] = {"sample"}
    arm = cell.arm.model_dump(mode="json", exclude=later or None)
    parts = {"data": config.data.model_dump(mode="json", exclude={"allow_leakage"}), "model": config.model.model_dump(mode="json"),
             "train": config.train.model_dump(mode="json"), "arm": arm,
             "dp": config.dp.model_dump(mode="json") if cell.epsilon is not None else None,
             "epsilon": cell.epsilon, "fraction": cell.fraction, "seed": cell.seed}
    return hash_strings([json.dumps(parts, sort_keys=True)])


# ------------------------------------------------------------ one cell ----
def run_cell(config: StudyConfig, prepared: Prepared, cell: Cell, folder: Path, device: torch.device,
             on_epoch=None, context: DistContext = SINGLE) -> dict:
    """Train and evaluate one cell; write predictions and metrics.json (last, as completion marker).

    Under torchrun (``context`` active) every rank trains its share of each batch and only
    rank 0 writes files.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    data = config.data
    index = torch.from_numpy(prepared.fraction_index[(cell.fraction, cell.seed)])
    real = (prepared.train_images[index], prepared.train_labels[index])
    kind = cell.arm.kind
    synthetic, origin = None, {}
    if cell.arm.synthetic is not None:
        generator, origin = _cell_source(config, prepared, cell, folder.parent.parent, device)
        synthetic = synthetic_for_cell(prepared, cell.arm, real[1], cell.seed, data.size, data.channels,
                                       generator)

    torch.manual_seed(cell.seed)
    model = create_classifier(config.model.backbone, data.channels, len(prepared.classes), data.size,
                              pretrained=config.model.pretrained, freeze_backbone=config.model.freeze_backbone,
                              head=config.model.head, classes=prepared.classes)
    dp = None if cell.epsilon is None else DPConfig(epsilon=cell.epsilon, delta=config.dp.delta,
                                                     max_grad_norm=config.dp.max_grad_norm,
                                                     noise_multiplier=cell.arm.dp_noise_multiplier)
    if dp is not None and not model.freeze_backbone:
        model.prepare_for_dp()  # the same layout for a synthetic pre-training phase and the private phase
    train_config = config.train
    if kind == "real+oversample":
        train_config = train_config.model_copy(update={"balance": "oversample"})

    info: dict[str, Any] = {"n_real": int(len(real[1])),
                            "n_synthetic": int(len(synthetic[1])) if synthetic is not None else 0}
    if kind == "synthetic-pretrain+real-finetune":
        pre_config = config.train.model_copy(update={"epochs": cell.arm.pretrain_epochs})
        if config.train.steps is not None:
            pre_config = pre_config.model_copy(update={"steps": cell.arm.pretrain_steps or config.train.steps})
        pretrain = train_classifier(model, synthetic, prepared.val, pre_config, seed=cell.seed, device=device,
                                    positive=prepared.positive, state_dir=folder / "pretrain", progress=on_epoch,
                                    context=context)
        info.update(pretrain_seconds=pretrain.seconds, pretrain_steps=pretrain.steps_run,
                    pretrain_images=pretrain.images_real + pretrain.images_synthetic)
        train_set = real
    elif kind == "real+synthetic":
        train_set = (torch.cat([real[0], synthetic[0]]), torch.cat([real[1], synthetic[1]]))
    elif kind == "synthetic-only":
        train_set = synthetic
    else:
        train_set = real
    mixed = kind == "real+synthetic"
    result = train_classifier(model, train_set, prepared.val, train_config, seed=cell.seed, device=device,
                              positive=prepared.positive, dp=dp, state_dir=folder, progress=on_epoch,
                              context=context, n_synthetic=len(synthetic[1]) if mixed else 0,
                              mix=cell.arm.synthetic.mix if mixed else None)
    # images seen by the classifier, by origin (synthetic-only trains on synthetic rows only)
    seen_synthetic = result.images_synthetic + (result.images_real if kind == "synthetic-only" else 0) \
        + info.get("pretrain_images", 0)
    seen_real = 0 if kind == "synthetic-only" else result.images_real

    val_probs = predict_proba(model, prepared.val[0], device, train_config.eval_batch_size)
    val_labels = prepared.val[1].numpy()
    threshold = youden_threshold((val_labels == prepared.positive).astype(np.int64), val_probs[:, prepared.positive])
    metrics = {}
    writes = context.is_main
    for name, (images, labels, uids) in prepared.tests.items():
        probs = predict_proba(model, images, device, train_config.eval_batch_size)
        if writes:
            _write_predictions(folder / f"predictions_{name}.csv", uids, labels.numpy(), probs, prepared.classes)
        metrics[name] = stats.cell_metrics(labels.numpy(), probs, prepared.positive, threshold, prepared.classes)
    if writes:
        _write_predictions(folder / "predictions_val.csv", [""] * len(val_labels), val_labels, val_probs,
                           prepared.classes)
    if config.save_models and writes:
        save_classifier(model, folder / "model", manifest=make_manifest(
            "classifier", config.model.model_dump(), cell.seed, prepared.data_hash, cell=cell.id))
    record = {
        "cell": cell.id, "fingerprint": cell_fingerprint(config, cell), "arm": cell.arm.name, "kind": kind, "variant": cell.variant, "epsilon": cell.epsilon,
        "fraction": cell.fraction, "seed": cell.seed, "threshold": threshold, "metrics": metrics,
        "train": {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                  "val_score": result.best_score, "epsilon_spent": result.epsilon_spent,
                  "noise_multiplier": result.noise_multiplier, "stopped_early": result.stopped_early,
                  "train_images_per_second": result.train_images_per_second, "history": result.history,
                  "budget": result.budget, "steps": result.steps_run, "best_step": result.best_step,
                  "images_seen": {"real": seen_real, "synthetic": seen_synthetic}, **info},
        **origin,
        "wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
        "device": str(device),
    }
    if context.active:
        record["world_size"] = context.world_size
    if not writes:
        return record
    write_json(folder / MARKER, record)
    for leftover in (folder / "train_state.pt", folder / "pretrain" / "train_state.pt"):
        leftover.unlink(missing_ok=True)  # the cell is final; resume state is no longer needed
    for leftover in [*folder.glob("ema_*.pt"), *folder.glob("pretrain/ema_*.pt")]:
        leftover.unlink(missing_ok=True)  # EMA shadows beside the resume state (classifiers.regularise)
    return record



def _cell_source(config: StudyConfig, prepared: Prepared, cell: Cell, out: Path, device) -> tuple[Any, dict]:
    """The in-study generator of this cell (None for other sources) and where its images come from."""
    records = prepared.cell_records(cell.fraction, cell.seed, config.data.train_split)
    if cell.arm.synthetic.train is None:
        found = cell_provenance(prepared.synthetic[cell.arm.name]["training_data"], records,
                                prepared.dataset.split(config.data.train_split).records,
                                prepared.dataset.records, cell.fraction)
        return None, {"provenance": found.to_json()}
    key = cell_generator_key(config, prepared, cell.arm, cell.fraction, cell.seed)
    folder = generator_folder(out, key)
    if not is_trained(folder):
        raise ConfigError(f"{folder}: the in-study generator of cell {cell.id} is not trained yet "
                          "(run_study trains generators before the cells that need them)")
    return load_in_study(folder, device), {"provenance": in_study_provenance(records).to_json(), "generator": key}


def _write_predictions(path: Path, uids: list[str], labels: np.ndarray, probs: np.ndarray,
                       classes: list[str]) -> None:
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "label", *[f"p_{c}" for c in classes]])
        for uid, label, row in zip(uids, labels, probs):
            writer.writerow([uid, classes[int(label)], *[repr(float(p)) for p in row]])



def read_predictions(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    labels = np.array([classes.index(r[1]) for r in rows], dtype=np.int64)
    probs = np.array([[float(v) for v in r[2:]] for r in rows], dtype=np.float64).reshape(len(rows), len(classes))
    return labels, probs


def read_prediction_uids(path: Path) -> list[str]:
    """The test cases of a predictions file, in its order (to check two files score the same cases)."""
    with open(path, newline="") as handle:
        return [row[0] for row in list(csv.reader(handle))[1:]]


# ------------------------------------------------------- unit of work ----
def cell_unit(config: StudyConfig, cell: Cell, out: str, device: torch.device | str, threads: int | None = None,
              cache_dir: str | None = None, on_epoch=None, context: DistContext = SINGLE) -> dict:
    """One study cell as a unit of work: load the inputs, train, write the cell folder, return its record.

    Runs wherever the executor puts it; everything it writes goes under ``out/cells/<cell>/``
    (predictions atomically, ``metrics.json`` last), so any executor can resume the study.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    if cache_dir is not None:  # the driver's tensor cache (a shared folder on a cluster)
        os.environ["ONCOSYNTH_CACHE"] = cache_dir
    folder = Path(out) / "cells" / cell.id
    record = read_marker(folder / MARKER)
    if record is not None and record.get("fingerprint") == cell_fingerprint(config, cell):
        return record  # a retried unit whose first attempt finished after all
    if isinstance(device, str):  # the unit crossed a process: this process is its boundary
        device = resolve_device(device)
    with RunThreads(folder, write=context.is_main):  # a resumed cell keeps the count it started with
        return run_cell(config, prepared_for(config), cell, folder, device, on_epoch, context)



def cell_resources(device: torch.device, threads: int = 1, gpus: float = 1.0) -> Resources:
    """What one cell asks the executor for: ``gpus`` of a GPU when training on CUDA (a fraction packs
    several cells on one GPU), else ``threads`` CPUs."""
    if device.type == "cuda":
        return Resources(cpus=1, gpus=gpus)
    return Resources(cpus=threads)

