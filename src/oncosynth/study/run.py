"""Running a study: check every input, train each cell, aggregate, write the report.

A *cell* is one (arm, epsilon, fraction, seed). Each cell writes its
predictions and ``metrics.json`` (the completion marker) under
``out/cells/<cell>/``; a re-run skips finished cells and resumes an
interrupted one from its last finished epoch.

Each unfinished cell is one unit of work (:func:`cell_unit`) handed to an
executor (``oncosynth.executor``): in this process by default, or a local
process pool, or Ray tasks on a cluster. The output folder is the only thing
cells share, so a study can be resumed under another executor.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from oncosynth.classifiers import DPConfig, create_classifier, predict_proba, save_classifier, train_classifier
from oncosynth.classifiers.scores import youden_threshold
from oncosynth.data import Dataset, cached_tensors, load_dataset, sample_fraction
from oncosynth.data.decode import convert_images
from oncosynth.distributed import SINGLE, DistContext, init_distributed, shutdown
from oncosynth.errors import ConfigError, DataError, WorkFailed
from oncosynth.executor import Executor, LocalExecutor, Outcome, Resources, Unit, create_executor
from oncosynth.io import atomic_write, write_json
from oncosynth.runtime import hash_strings, make_manifest, resolve_device
from oncosynth.study.config import ArmConfig, StudyConfig, SyntheticSource, load_config
from oncosynth.study import stats

MAIN_TEST = "test"


@dataclass
class Cell:
    arm: ArmConfig
    epsilon: float | None
    fraction: float
    seed: int

    @property
    def variant(self) -> str:
        """The arm as shown in tables: its name, plus the privacy budget under DP."""
        return self.arm.name if self.epsilon is None else f"{self.arm.name} (DP ε={self.epsilon:g})"

    @property
    def id(self) -> str:
        eps = "nodp" if self.epsilon is None else f"eps{self.epsilon:g}"
        return re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{self.arm.name}__{eps}__f{self.fraction:g}__s{self.seed}")


@dataclass
class Prepared:
    """Everything checked and loaded before the first cell trains."""

    dataset: Dataset
    classes: list[str]
    positive: int
    train_uids: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val: tuple[torch.Tensor, torch.Tensor]
    tests: dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]
    fraction_index: dict[tuple[float, int], np.ndarray]
    synthetic: dict[str, Any] = field(default_factory=dict)  # arm name -> (images, labels) or generator
    data_hash: str = ""


# ------------------------------------------------------------ planning ----
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


def positive_index(classes: list[str], wanted: str | None) -> int:
    if wanted is not None:
        if wanted not in classes:
            raise ConfigError(f"positive_class '{wanted}' is not a class of the data set {classes}")
        return classes.index(wanted)
    return classes.index("malignant") if "malignant" in classes else len(classes) - 1


def _with_classes(dataset: Dataset, classes: list[str], what: str) -> Dataset:
    """Re-express ``dataset`` labels as indices into ``classes``; unknown classes are an error."""
    unknown = sorted(set(dataset.counts()) - set(classes)) if dataset.records else []
    unknown = [c for c in unknown if dataset.counts()[c] > 0]
    if unknown:
        raise ConfigError(f"{what} has class(es) {unknown} that the training data set lacks (it has {classes})")
    return dataclasses.replace(dataset, classes=list(classes))


def _to_uint8(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Float [0, 1] images from a generator -> uint8 at the study's size and channel count."""
    return (convert_images(images.clamp(0, 1), size, channels) * 255).round().to(torch.uint8)


def prepare(config: StudyConfig, progress: bool = True) -> Prepared:
    """Load and check every input; raise OncosynthError before any training on bad input."""
    data = config.data
    dataset = load_dataset(data.path, format=data.format, label_from_name=data.label_from_name,
                           patients_csv=data.patients_csv)
    classes = list(dataset.classes)
    if len(classes) < 2:
        raise ConfigError(f"{data.path}: need at least two classes, found {classes}")
    positive = positive_index(classes, data.positive_class)
    for split in (data.train_split, data.val_split, data.test_split):
        if not dataset.split(split).records:
            raise DataError(data.path, f"no images in split '{split}' (splits present: {dataset.splits})")
    train = dataset.split(data.train_split)
    for split in (data.val_split, data.test_split):
        counts = dataset.split(split).counts()
        if min(counts.values()) == 0:
            raise DataError(data.path, f"split '{split}' lacks class(es) "
                            f"{[c for c, k in counts.items() if k == 0]}: AUROC needs every class")

    # Fractions: patient-level, stratified, checked for empty classes for every seed.
    uid_position = {r.uid: i for i, r in enumerate(train.records)}
    fraction_index = {}
    for fraction in config.fractions:
        for seed in config.seeds:
            subset = sample_fraction(dataset, fraction, seed=seed, split=data.train_split)
            empty = [c for c, k in subset.counts().items() if k == 0]
            if empty:
                raise ConfigError(f"fraction {fraction} (seed {seed}) leaves class(es) {empty} with no "
                                  "training image; use a larger fraction")
            fraction_index[(fraction, seed)] = np.array([uid_position[r.uid] for r in subset.records])

    # External test sets, labels re-indexed into the training classes.
    tests_raw = {MAIN_TEST: dataset.split(data.test_split)}
    for test in config.external_tests:
        if test.name in tests_raw:
            raise ConfigError(f"external test name '{test.name}' is used twice (or is the reserved '{MAIN_TEST}')")
        external = load_dataset(test.path, format=test.format, label_from_name=test.label_from_name)
        if test.split is not None:
            if not external.split(test.split).records:
                raise DataError(test.path, f"no images in split '{test.split}' (present: {external.splits})")
            external = external.split(test.split)
        tests_raw[test.name] = _with_classes(external, classes, f"external test set '{test.name}' ({test.path})")

    # Synthetic sources: parse labels and check classes now, load pixels too.
    synthetic = {}
    for arm in config.arms:
        if arm.synthetic is not None:
            synthetic[arm.name] = _prepare_synthetic(arm, classes, data.size, data.channels, progress)

    size, channels = data.size, data.channels
    train_images, train_labels = cached_tensors(train, size, channels, progress=progress)
    val = cached_tensors(dataset.split(data.val_split), size, channels, progress=progress)
    tests = {}
    for name, test_set in tests_raw.items():
        images, labels = cached_tensors(test_set, size, channels, progress=progress)
        tests[name] = (images, labels, [r.uid for r in test_set.records])
    data_hash = hash_strings([r.uid for r in dataset.records] + [str(size), str(channels)])
    return Prepared(dataset, classes, positive, [r.uid for r in train.records], train_images, train_labels,
                    val, tests, fraction_index, synthetic, data_hash)


def _prepare_synthetic(arm: ArmConfig, classes: list[str], size: int, channels: int, progress: bool):
    source = arm.synthetic
    assert source is not None
    for name in source.classes or []:
        if name not in classes:
            raise ConfigError(f"arm '{arm.name}': synthetic class '{name}' is not a class of the data set {classes}")
    if source.generator is not None:
        from oncosynth.generators import load_generator

        generator = load_generator(source.generator)
        missing = [c for c in (source.classes or generator.classes) if c not in generator.classes]
        if missing:
            raise ConfigError(f"arm '{arm.name}': generator {source.generator} cannot make class(es) {missing} "
                              f"(it has {generator.classes})")
        extra = [c for c in generator.classes if c not in classes]
        if extra:
            raise ConfigError(f"arm '{arm.name}': generator class(es) {extra} are not in the data set {classes}")
        return {"generator": generator}
    synthetic = load_dataset(source.folder, format=source.format, label_from_name=source.label_from_name)
    synthetic = _with_classes(synthetic, classes, f"arm '{arm.name}': synthetic folder {source.folder}")
    images, labels = cached_tensors(synthetic, size, channels, progress=progress)
    return {"images": images, "labels": labels}


# -------------------------------------------------- synthetic selection ----
def synthetic_counts(source: SyntheticSource, real_counts: np.ndarray, classes: list[str],
                     available: np.ndarray | None) -> np.ndarray:
    """How many synthetic images of each class one cell uses."""
    targets = np.array([c in (source.classes or classes) for c in classes])
    if source.balance:
        want = np.where(targets, real_counts.max() - real_counts, 0)
    elif source.count is not None or source.ratio is not None:
        total = source.count if source.count is not None else int(round(source.ratio * real_counts.sum()))
        share = np.where(targets, total // targets.sum(), 0)
        share[np.flatnonzero(targets)[: total - share.sum()]] += 1  # spread the remainder
        want = share
    else:  # a folder without a count: every image of the target classes
        want = np.where(targets, available if available is not None else 0, 0)
    if available is not None:
        want = np.minimum(want, available)
    return want.astype(np.int64)


def synthetic_for_cell(prepared: Prepared, arm: ArmConfig, real_labels: torch.Tensor, seed: int,
                       size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    source, store = arm.synthetic, prepared.synthetic[arm.name]
    k = len(prepared.classes)
    real_counts = np.bincount(real_labels.numpy(), minlength=k)
    rng = np.random.default_rng(seed)
    if "generator" in store:
        counts = synthetic_counts(source, real_counts, prepared.classes, None)
        images, labels = [], []
        for index, n in enumerate(counts):
            if n > 0:
                made = store["generator"].sample(int(n), prepared.classes[index], seed=seed * 1_000_003)
                images.append(_to_uint8(made, size, channels))
                labels.append(torch.full((int(n),), index, dtype=torch.int64))
        if not images:
            return torch.zeros((0, channels, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
        return torch.cat(images), torch.cat(labels)
    pool_labels = store["labels"].numpy()
    available = np.bincount(pool_labels, minlength=k)
    counts = synthetic_counts(source, real_counts, prepared.classes, available)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(pool_labels == c))[:n] for c, n in enumerate(counts)])
    chosen = torch.from_numpy(np.sort(chosen))
    return store["images"][chosen], store["labels"][chosen]


def cell_fingerprint(config: StudyConfig, cell: Cell) -> str:
    """Everything that decides a cell's result; a resumed study refuses cells made differently."""
    parts = {"data": config.data.model_dump(mode="json"), "model": config.model.model_dump(mode="json"),
             "train": config.train.model_dump(mode="json"), "arm": cell.arm.model_dump(mode="json"),
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
    synthetic = None
    if cell.arm.synthetic is not None:
        synthetic = synthetic_for_cell(prepared, cell.arm, real[1], cell.seed, data.size, data.channels)

    torch.manual_seed(cell.seed)
    model = create_classifier(config.model.backbone, data.channels, len(prepared.classes), data.size,
                              pretrained=config.model.pretrained, freeze_backbone=config.model.freeze_backbone,
                              head=config.model.head, classes=prepared.classes)
    dp = None if cell.epsilon is None else DPConfig(epsilon=cell.epsilon, delta=config.dp.delta,
                                                     max_grad_norm=config.dp.max_grad_norm)
    if dp is not None and not model.freeze_backbone:
        model.prepare_for_dp()  # the same layout for a synthetic pre-training phase and the private phase
    train_config = config.train
    if kind == "real+oversample":
        train_config = train_config.model_copy(update={"balance": "oversample"})

    info: dict[str, Any] = {"n_real": int(len(real[1])),
                            "n_synthetic": int(len(synthetic[1])) if synthetic is not None else 0}
    if kind == "synthetic-pretrain+real-finetune":
        pre_config = config.train.model_copy(update={"epochs": cell.arm.pretrain_epochs})
        pretrain = train_classifier(model, synthetic, prepared.val, pre_config, seed=cell.seed, device=device,
                                    positive=prepared.positive, state_dir=folder / "pretrain", progress=on_epoch,
                                    context=context)
        info["pretrain_seconds"] = pretrain.seconds
        train_set = real
    elif kind == "real+synthetic":
        train_set = (torch.cat([real[0], synthetic[0]]), torch.cat([real[1], synthetic[1]]))
    elif kind == "synthetic-only":
        train_set = synthetic
    else:
        train_set = real
    result = train_classifier(model, train_set, prepared.val, train_config, seed=cell.seed, device=device,
                              positive=prepared.positive, dp=dp, state_dir=folder, progress=on_epoch,
                              context=context)

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
                  "train_images_per_second": result.train_images_per_second, "history": result.history, **info},
        "wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
        "device": str(device),
    }
    if context.active:
        record["world_size"] = context.world_size
    if not writes:
        return record
    write_json(folder / "metrics.json", record)
    for leftover in (folder / "train_state.pt", folder / "pretrain" / "train_state.pt"):
        leftover.unlink(missing_ok=True)  # the cell is final; resume state is no longer needed
    return record


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


# ----------------------------------------------------------- aggregate ----
def aggregate(config: StudyConfig, records: list[dict], out: Path, classes: list[str],
              positive: int) -> list[dict]:
    """One row per (test set, variant, fraction): seed mean ± std, bootstrap intervals, paired ΔAUROC."""
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["variant"], record["fraction"]), []).append(record)
    test_names = list(records[0]["metrics"]) if records else []
    for test in test_names:
        predictions = {}
        for key, members in groups.items():
            loaded = [read_predictions(out / "cells" / m["cell"] / f"predictions_{test}.csv", classes)
                      for m in sorted(members, key=lambda m: m["seed"])]
            predictions[key] = (loaded[0][0], {m["seed"]: p for m, (_, p) in zip(
                sorted(members, key=lambda m: m["seed"]), loaded)})
        n_cases = len(next(iter(predictions.values()))[0])
        index = stats.bootstrap_indices(n_cases, config.bootstrap, seed=0)
        for (variant, fraction), members in groups.items():
            labels, by_seed = predictions[(variant, fraction)]
            first = members[0]
            row: dict[str, Any] = {"test_set": test, "arm": first["arm"], "kind": first["kind"],
                                   "variant": variant, "epsilon": first["epsilon"], "fraction": fraction,
                                   "seeds": len(members)}
            for metric in first["metrics"][test]:
                row[f"{metric}_mean"], row[f"{metric}_std"] = stats.summarise_seeds(
                    [m["metrics"][test][metric] for m in members])
            for metric in ("auroc", "auprc"):
                row[f"{metric}_low"], row[f"{metric}_high"] = stats.seed_mean_interval(
                    labels, list(by_seed.values()), positive, index, metric)
            reference = _reference_key(config, groups, first, fraction)
            if reference is not None and reference != (variant, fraction):
                ref_seeds = predictions[reference][1]
                common = sorted(set(by_seed) & set(ref_seeds))
                row.update(stats.paired_difference(labels, [by_seed[s] for s in common],
                                                   [ref_seeds[s] for s in common], positive, index))
                row["reference"] = reference[0]
            spent = [m["train"]["epsilon_spent"] for m in members if m["train"]["epsilon_spent"] is not None]
            row["epsilon_spent"] = float(np.mean(spent)) if spent else None
            row["cpu_minutes_per_cell"] = float(np.mean([m["cpu_seconds"] for m in members]) / 60)
            row["wall_minutes_per_cell"] = float(np.mean([m["wall_seconds"] for m in members]) / 60)
            rows.append(row)
    return rows


def _reference_key(config: StudyConfig, groups: dict, record: dict, fraction: float):
    """The `real` arm at the same fraction and privacy budget, if the study has one."""
    for arm in config.arms:
        if arm.kind == "real":
            cell = Cell(arm, record["epsilon"], fraction, 0)
            if (cell.variant, fraction) in groups:
                return (cell.variant, fraction)
    return None


def write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# ----------------------------------------------------------------- run ----
_PREPARED: dict[str, Prepared] = {}  # per process: the inputs of the study its cells belong to


def _config_key(config: StudyConfig) -> str:
    return hash_strings([json.dumps(config.model_dump(mode="json"), sort_keys=True)])


def prepared_for(config: StudyConfig) -> Prepared:
    """The study's checked inputs, loaded once per process (a pool or Ray worker runs many cells).

    Re-loading is cheap: the pixels come from the memory-mapped tensor cache the driver filled.
    """
    key = _config_key(config)
    if key not in _PREPARED:
        _PREPARED.clear()  # one study per process at a time; bounds the memory
        _PREPARED[key] = prepare(config, progress=False)
    return _PREPARED[key]


def cell_unit(config: StudyConfig, cell: Cell, out: str, device: str, threads: int | None = None,
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
    marker = folder / "metrics.json"
    if marker.is_file():  # a retried unit whose first attempt finished after all
        record = json.loads(marker.read_text())
        if record.get("fingerprint") == cell_fingerprint(config, cell):
            return record
    return run_cell(config, prepared_for(config), cell, folder, resolve_device(device), on_epoch, context)


def cell_resources(device: torch.device, threads: int = 1, gpus: float = 1.0) -> Resources:
    """What one cell asks the executor for: ``gpus`` of a GPU when training on CUDA (a fraction packs
    several cells on one GPU), else ``threads`` CPUs."""
    if device.type == "cuda":
        return Resources(cpus=1, gpus=gpus)
    return Resources(cpus=threads)


def run_study(config: StudyConfig | str | Path, out: str | Path = "study-out", device: str = "auto",
              progress: bool = True, executor: Executor | str | None = None,
              executor_options: dict[str, Any] | None = None, threads_per_cell: int = 1,
              distributed: bool = False, gpus_per_cell: float = 1.0) -> Path:
    """Run (or resume) every cell, then write results.json, results.csv and report.html; return the report path.

    ``executor`` decides where cells run: ``None``/``"local"`` (in this process unless
    ``executor_options={"workers": N}``), ``"ray"`` (``executor_options`` ``address``,
    ``num_cpus``, ``retries``) or an :class:`~oncosynth.executor.Executor` instance. Finished
    cells are kept whatever happens to others; failed cells are listed in a
    :class:`~oncosynth.errors.WorkFailed` raised after every other cell finished.

    ``distributed=True`` (under torchrun): each cell in turn is trained data-parallel by all
    ranks (DDP); rank 0 writes the cells and the results.
    """
    if not isinstance(config, StudyConfig):
        config = load_config(config)
    out = Path(out).resolve()
    context = SINGLE
    if distributed:
        if executor not in (None, "local") or (executor_options or {}).get("workers"):
            raise ConfigError("--distributed trains one cell at a time on all torchrun processes; "
                              "it cannot be combined with --executor ray or --workers")
        if any(cell.epsilon is not None for cell in plan_cells(config)):
            raise ConfigError("--distributed does not run DP-SGD cells (opacus); drop the DP arms or run "
                              "them without --distributed")
        context, device = init_distributed(device, config.train.batch_size)
        progress = progress and context.is_main
    elif device.startswith("cuda") and _remote(executor):
        device = torch.device(device)  # the GPUs are on the cluster's nodes, not necessarily here
    else:
        device = resolve_device(device)
    cells = plan_cells(config)
    records: dict[str, dict] = {}
    todo = []
    for cell in cells:
        marker = out / "cells" / cell.id / "metrics.json"
        if marker.is_file():
            record = json.loads(marker.read_text())
            if record.get("fingerprint", cell_fingerprint(config, cell)) != cell_fingerprint(config, cell):
                raise ConfigError(f"{marker.parent} was computed with other settings than this config; "
                                  "use another --out folder or delete that cell")
            records[cell.id] = record
        else:
            todo.append(cell)

    own_executor = not isinstance(executor, Executor)
    if own_executor:  # an unreachable cluster fails here, before the data are loaded
        executor = create_executor(executor or "local", **(executor_options or {}))
    try:
        inline = isinstance(executor, LocalExecutor) and executor.workers == 0
        if not 0 < gpus_per_cell <= 1 and not (gpus_per_cell > 1 and float(gpus_per_cell).is_integer()):
            raise ConfigError(f"gpus per cell must be a fraction in (0, 1] or a whole number, not {gpus_per_cell}")
        units = _cell_units(config, todo, out, device, executor, inline, threads_per_cell, gpus_per_cell)
        if context.active:
            for unit in units:
                unit.kwargs["context"] = context
        executor.check(units)  # e.g. GPUs the cluster lacks: fail before any work
        prepared = prepare(config, progress=progress)  # all input errors surface here, before training
        if context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", config.model_dump(mode="json"))
        if inline:
            _PREPARED.clear()
            _PREPARED[_config_key(config)] = prepared  # the cells reuse what was just loaded
        failures = _run_cells(config, units, cells, records, executor, progress)
    finally:
        if own_executor:
            executor.close()
    if failures:
        finished = sum(1 for c in cells if c.id in records)
        listed = "; ".join(f"{o.key}: {o.error} (after {o.attempts} attempt(s))" for o in failures)
        raise WorkFailed(f"{len(failures)} of {len(cells)} study cells failed ({listed}). The {finished} finished "
                         f"cells are kept in {out / 'cells'}; run the same command again to retry only the others")

    if not context.is_main:
        shutdown(context)
        return out / "report.html"
    ordered = [records[c.id] for c in cells]
    rows = aggregate(config, ordered, out, prepared.classes, prepared.positive)
    manifest = make_manifest("study", config.model_dump(mode="json"), None, prepared.data_hash,
                             device=str(device), cells=len(cells))
    write_json(out / "results.json", {"manifest": manifest, "classes": prepared.classes,
                                      "positive_class": prepared.classes[prepared.positive],
                                      "summary": rows, "cells": ordered})
    write_csv(out / "results.csv", rows)
    from oncosynth.study.report import write_report

    report = write_report(out / "report.html", config, prepared, ordered, rows, out)
    shutdown(context)
    return report


def _remote(executor: Executor | str | None) -> bool:
    """Cells run on other machines (so CUDA need not be available where the study is started)."""
    if isinstance(executor, Executor):
        return not isinstance(executor, LocalExecutor)
    return executor not in (None, "local")


def _cell_units(config: StudyConfig, todo: list[Cell], out: Path, device: torch.device, executor: Executor,
                inline: bool, threads: int, gpus: float = 1.0) -> list[Unit]:
    # a remote worker sees only the GPU(s) Ray gave it, as cuda:0
    unit_device = "cuda" if device.type == "cuda" and not isinstance(executor, LocalExecutor) else str(device)
    units = []
    for cell in todo:
        kwargs: dict[str, Any] = {}
        if not inline:
            kwargs["threads"] = threads
            kwargs["cache_dir"] = os.environ.get("ONCOSYNTH_CACHE")
        units.append(Unit(cell.id, cell_unit, (config, cell, str(out), unit_device), kwargs,
                          cell_resources(device, threads, gpus)))
    return units


def _run_cells(config: StudyConfig, units: list[Unit], cells: list[Cell], records: dict[str, dict],
               executor: Executor, progress: bool) -> list[Outcome]:
    """Hand the unfinished cells to the executor; fill ``records`` as they finish; return the failures."""
    bar = tqdm(total=len(cells), initial=len(cells) - len(units), desc=f"study {config.name}", unit="cell",
               disable=not progress)
    if isinstance(executor, LocalExecutor) and executor.workers == 0:  # in this process: epoch progress too
        for unit in units:
            def on_epoch(info: dict, key=unit.key) -> None:
                bar.set_postfix_str(f"{key} epoch {info['epoch']}/{info['epochs']} "
                                    f"val {info.get('val_' + config.train.select_on, float('nan')):.3f}")
            unit.kwargs["on_epoch"] = on_epoch
        if units:
            bar.set_postfix_str(f"{units[0].key} starting")
    failures = []
    started, trained = time.perf_counter(), 0
    for outcome in executor.run(units):
        bar.update(1)
        if not outcome.ok:
            failures.append(outcome)
            bar.set_postfix_str(f"{outcome.key} FAILED")
            continue
        records[outcome.key] = outcome.value
        trained += 1
        left = len(units) - trained - len(failures)
        per_cell = (time.perf_counter() - started) / trained
        bar.set_postfix_str(f"{outcome.key} done; ~{per_cell * left / 60:.1f} min left")
    bar.close()
    return failures
