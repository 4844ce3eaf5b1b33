"""The inputs of a study: load and check every input before the first cell trains.

Everything a cell needs (the training, validation and test tensors, the patient-level
fractions for every seed, the synthetic sources) is loaded and checked here, so bad input
fails with one clear line before any training. A worker process that runs many cells loads
it once (:func:`prepared_for`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncosynth.data import Dataset, cached_tensors, load_dataset, positive_index, sample_fraction
from oncosynth.data.splits import guard_leakage
from oncosynth.errors import ConfigError, DataError
from oncosynth.runtime.manifest import hash_strings
from oncosynth.study.config import ArmConfig, StudyConfig
from oncosynth.study.provenance import check_backbone_held_out, check_held_out, source_training_data

MAIN_TEST = "test"



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
    leakage: list[dict] = field(default_factory=list)  # patients in two splits, when data.allow_leakage

    def cell_records(self, fraction: float, seed: int, train_split: str) -> list:
        """The real training Records of the cell at (fraction, seed), in tensor order."""
        train = self.dataset.split(train_split).records
        return [train[i] for i in self.fraction_index[(fraction, seed)]]



def _with_classes(dataset: Dataset, classes: list[str], what: str) -> Dataset:
    """Re-express ``dataset`` labels as indices into ``classes``; unknown classes are an error."""
    unknown = sorted(set(dataset.counts()) - set(classes)) if dataset.records else []
    unknown = [c for c in unknown if dataset.counts()[c] > 0]
    if unknown:
        raise ConfigError(f"{what} has class(es) {unknown} that the training data set lacks (it has {classes})")
    return dataclasses.replace(dataset, classes=list(classes))



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
    leakage = guard_leakage(dataset, (data.train_split, data.val_split, data.test_split), data.allow_leakage,
                            "set data.allow_leakage: true in the study config (or pass --allow-leakage)")
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

    # Synthetic sources: parse labels and check classes now, load pixels too; refuse a generator
    # that saw held-out images, and keep what each one saw for the per-cell leak flag.
    held_out = {data.val_split: dataset.split(data.val_split).records,
                data.test_split: dataset.split(data.test_split).records,
                **{name: d.records for name, d in tests_raw.items() if name != MAIN_TEST}}
    synthetic = {}
    for arm in config.arms:
        if arm.synthetic is not None:
            synthetic[arm.name] = _prepare_synthetic(arm, classes, data.size, data.channels, progress)
            if arm.synthetic.train is None:
                seen = source_training_data(arm.synthetic.folder, arm.synthetic.manifest,
                                            getattr(synthetic[arm.name].get("generator"), "manifest", None))
                check_held_out(seen, dataset.records, held_out, f"arm '{arm.name}': its generator",
                               same_patients=(data.val_split, data.test_split))
                synthetic[arm.name]["training_data"] = seen

    if config.model.pretrained not in (None, "timm"):
        check_backbone_held_out(Path(config.model.pretrained), data.path, dataset.records, held_out,
                                same_patients=(data.val_split, data.test_split))

    size, channels = data.size, data.channels
    train_images, train_labels = cached_tensors(train, size, channels, progress=progress)
    val = cached_tensors(dataset.split(data.val_split), size, channels, progress=progress)
    tests = {}
    for name, test_set in tests_raw.items():
        images, labels = cached_tensors(test_set, size, channels, progress=progress)
        tests[name] = (images, labels, [r.uid for r in test_set.records])
    data_hash = hash_strings([r.uid for r in dataset.records] + [str(size), str(channels)])
    return Prepared(dataset, classes, positive, [r.uid for r in train.records], train_images, train_labels,
                    val, tests, fraction_index, synthetic, data_hash, leakage)


def _check_sample_options(arm: ArmConfig, generator) -> None:
    """The arm's ``sample:`` options, checked before anything trains (any object with ``sample`` may serve
    as a generator; one without ``check_sample_options`` takes no options)."""
    options = arm.synthetic.sample
    if not options:
        return
    check = getattr(generator, "check_sample_options", None)
    if check is None:
        raise ConfigError(f"arm '{arm.name}': its generator takes no sampling options, got {sorted(options)}")
    check(**options)


def _prepare_synthetic(arm: ArmConfig, classes: list[str], size: int, channels: int, progress: bool):
    source = arm.synthetic
    assert source is not None
    for name in source.classes or []:
        if name not in classes:
            raise ConfigError(f"arm '{arm.name}': synthetic class '{name}' is not a class of the data set {classes}")
    if source.train is not None:  # trained per cell later; check the method and its options now
        from oncosynth.generators import create_generator

        _check_sample_options(arm, create_generator(source.train.method, **source.train.options))
        return {"train": source.train}
    if source.generator is not None:
        from oncosynth.generators import load_generator

        generator = load_generator(source.generator)
        _check_sample_options(arm, generator)
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


# --------------------------------------------------- once per process ----
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



def keep_prepared(config: StudyConfig, prepared: Prepared) -> None:
    """Let the cells of this process reuse inputs that were just loaded (the in-process executor)."""
    _PREPARED.clear()
    _PREPARED[_config_key(config)] = prepared
