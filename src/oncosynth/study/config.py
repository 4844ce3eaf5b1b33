"""The study configuration: one YAML file, validated completely before any training.

Example (every key is optional unless marked)::

    name: cbis-utility
    data: {path: ../shared/data/cbis-ddsm-masses, size: 128, channels: 1}   # path required
    external_tests:
      - {name: hospital-b, path: /data/hospital-b, split: null}
    model: {backbone: resnet18, pretrained: null, freeze_backbone: false}
    train: {steps: 600, eval_every: 50, batch_size: 64, lr: 0.001, select_on: auroc}  # or epochs: 20
    dp: {epsilons: [6], delta: 0.0001, max_grad_norm: 1.0}
    arms:
      - {name: real, kind: real, dp: both}
      - {name: real+oversample, kind: real+oversample}
      - name: real+mcgan
        kind: real+synthetic
        dp: both
        synthetic: {folder: ../shared/data/mcgan-synthetic-cbis-ddsm, label_from_name: true, ratio: null,
                    manifest: peer-manifest.json}   # what that generator was trained on
      - {name: real-at-mcgan-noise, kind: real, dp: on, dp_noise_multiplier: 0.66}   # control: the noise the
        # real+mcgan arm's accountant chose (its extra records allow less noise at one ε); reports the ε spent
      - name: real+mcgan-in-study     # trained per (fraction, seed) on that cell's own records
        kind: real+synthetic
        synthetic: {train: {method: mcgan, steps: 2000, options: {width: 16}}, ratio: 1.0, mix: 0.5}
    fractions: [0.1, 1.0]
    seeds: [0, 1, 2]

Classifier recipe (``train:``):
``normalise: none|standardise|percentile`` (per image, kept in the classifier checkpoint),
``augmentations: {crop_scale, elastic, gamma, contrast, brightness, blur, noise, ...}``,
``mixup``/``cutmix`` (Beta alphas) with ``mix_prob``, ``ema`` (decay; the average is what is
selected and kept), ``tta: true`` (flip test-time augmentation), ``schedule: one-cycle``.
Presets set several at once; explicit keys beside them win::

    train: {recipe: mammo}    # 1-channel mammography patches
    train: {recipe: histo}    # RGB histopathology patches

- ``mammo``: per-image percentile normalisation and lr 3e-4 (an explicit ``lr`` wins), the rest as
  the old default. **The default for 1-channel studies** that name no ``recipe`` (``recipe: null``:
  the old default); it won the validation-only recipe search (bench/RESULTS.md, "Classifier recipe").
- ``histo``: per-image standardisation, flips, 90° turns, random resized crop (area >= 0.6),
  elastic 0.02, colour gain 0.1, gamma/contrast/brightness, blur, noise, EMA 0.99, flip TTA,
  one-cycle. Opt-in: it lost to the old default on PCam's validation split, so RGB studies keep the old default.

Details: ``oncosynth.classifiers.recipe``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from oncosynth.classifiers.train import TrainConfig
from oncosynth.errors import ConfigError

DEFAULT_GREY_RECIPE = "mammo"  # the validation winner for 1-channel patches (bench/RESULTS.md, issue 18)



@dataclass(frozen=True)
class ArmKind:
    """What an arm kind needs and does; every kind is listed once, in ``ARM_KINDS``."""

    synthetic: bool  # needs a `synthetic` source
    trains_on: str  # what its cells train on, as the study page says it


ARM_KINDS: dict[str, ArmKind] = {
    "real": ArmKind(False, "the real images above"),
    "real+oversample": ArmKind(False, "the real images above, classes oversampled"),
    "real+synthetic": ArmKind(True, "the real images above plus these synthetic ones"),
    "synthetic-only": ArmKind(True, "only these synthetic images"),
    "synthetic-pretrain+real-finetune": ArmKind(True, "pre-trained on these synthetic images, fine-tuned on the real ones"),
}
ArmKindName = Literal[tuple(ARM_KINDS)]  # type: ignore[valid-type]  # the YAML `kind:` values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    path: Path
    format: str | None = None
    label_from_name: bool = False
    patients_csv: Path | None = None
    size: int = Field(128, ge=16)
    channels: Literal[1, 3] = 1
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    positive_class: str | None = Field(None, description="default: 'malignant' if present, else the last class")
    allow_leakage: bool = Field(False, description="run although a patient is in two of the splits (reported)")


class ExternalTest(Strict):
    name: str
    path: Path
    format: str | None = None
    label_from_name: bool = False
    split: str | None = Field("test", description="which split of that data set; null = every image")


class ModelConfig(Strict):
    backbone: str = "resnet18"
    pretrained: str | None = Field(None, description="None, 'timm' (hub download) or a weights file")
    freeze_backbone: bool = False
    head: Literal["linear", "mlp"] | None = None

    @model_validator(mode="after")
    def _known_backbone(self) -> "ModelConfig":
        # checked here, not when the first cell builds its model: otherwise every cell fails in turn
        import difflib

        import timm

        known = timm.list_models()  # the same list classifiers.model checks when it builds one
        if self.backbone not in known:
            close = difflib.get_close_matches(self.backbone, known, n=3)
            raise ValueError(f"unknown backbone '{self.backbone}' (not a timm model name)"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
        return self


class GeneratorTraining(Strict):
    """A generator trained inside the study, per (fraction, seed), on that cell's real records."""

    method: str = Field(description="a registered generator name (oncosynth.generators.list_generators)")
    steps: int | None = Field(ge=1, description="the generator's training steps (null: a generator whose length "
                                                "is set otherwise, e.g. SinGAN's iters per scale in 'fit')")
    options: dict = Field(default_factory=dict, description="create_generator options, e.g. {width: 16}")
    fit: dict = Field(default_factory=dict, description="extra fit() options, e.g. {checkpoint_every: 200}")


class SyntheticSource(Strict):
    """Where synthetic images come from and how many of them an arm uses."""

    folder: Path | None = None
    train: GeneratorTraining | None = None
    manifest: Path | None = Field(None, description="a JSON manifest naming what the folder's generator saw")
    mix: float | None = Field(None, ge=0, le=1, description="expected synthetic share of each batch "
                                                            "(default: proportional to the counts)")
    format: str | None = None
    label_from_name: bool = True
    generator: Path | None = Field(None, description="a run folder for oncosynth.generators.load_generator")
    count: int | None = Field(None, ge=1, description="total synthetic images per cell")
    ratio: float | None = Field(None, gt=0, description="synthetic images per real training image")
    classes: list[str] | None = Field(None, description="classes that receive synthetic images (default all)")
    balance: bool = Field(False, description="add only enough images to bring each class up to the largest")
    sample: dict = Field(default_factory=dict, description="options for the generator's sample(), e.g. DDPM's "
                                                           "{guidance: 4, steps: 25, notch: 2.5}: arms that "
                                                           "sample one trained generator differently share it")

    @model_validator(mode="after")
    def _one_source(self) -> "SyntheticSource":
        if sum(x is not None for x in (self.folder, self.generator, self.train)) != 1:
            raise ValueError("give exactly one of 'folder', 'generator' or 'train'")
        if self.count is not None and self.ratio is not None:
            raise ValueError("give at most one of 'count' or 'ratio'")
        if self.folder is None and self.count is None and self.ratio is None and not self.balance:
            raise ValueError("a generator needs 'count', 'ratio' or 'balance: true' (it can make any number)")
        if self.sample and self.folder is not None:
            raise ValueError("'sample' sets how a generator samples; a folder's images are already made")
        if self.manifest is not None and self.train is not None:
            raise ValueError("an in-study generator's training data are known; 'manifest' is for a folder or generator")
        return self


class ArmConfig(Strict):
    name: str
    kind: ArmKindName
    synthetic: SyntheticSource | None = None
    dp: Literal["off", "on", "both"] = Field("off", description="on: only DP cells; both: with and without DP")
    pretrain_epochs: int = Field(5, ge=1, description="synthetic-pretrain+real-finetune: epochs on synthetic data")
    pretrain_steps: int | None = Field(None, ge=1, description="the same in optimiser steps (with train.steps)")
    dp_noise_multiplier: float | None = Field(
        None, gt=0, description="DP cells add this noise instead of the noise that meets the ε target, and report "
        "the ε they spend: a control for how much of an arm's result comes from the accounting (more records, "
        "less noise at one ε) rather than from its images")

    @model_validator(mode="after")
    def _needs_synthetic(self) -> "ArmConfig":
        needs = ARM_KINDS[self.kind].synthetic
        if needs and self.synthetic is None:
            raise ValueError(f"arm '{self.name}' of kind '{self.kind}' needs a 'synthetic' source")
        if not needs and self.synthetic is not None:
            raise ValueError(f"arm '{self.name}' of kind '{self.kind}' does not use 'synthetic'")
        if self.kind == "real+oversample" and self.dp != "off":
            raise ValueError("real+oversample repeats records, which DP-SGD accounting does not cover")
        if self.synthetic is not None and self.synthetic.mix is not None:
            if self.kind != "real+synthetic":
                raise ValueError(f"arm '{self.name}': 'mix' sets the synthetic share of real+synthetic batches")
            if self.dp != "off":
                raise ValueError(f"arm '{self.name}': 'mix' cannot be used with DP (Poisson sampling draws "
                                 "every record alike)")
        if self.dp_noise_multiplier is not None and self.dp != "on":
            raise ValueError(f"arm '{self.name}': dp_noise_multiplier applies to DP cells; set dp: on")
        return self


class DPSettings(Strict):
    epsilons: list[float] = Field(default_factory=lambda: [6.0])
    delta: float = Field(1e-4, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)


class StudyConfig(Strict):
    name: str = "study"
    data: DataConfig
    external_tests: list[ExternalTest] = Field(default_factory=list)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    dp: DPSettings = DPSettings()
    arms: list[ArmConfig]
    fractions: list[float] = Field(default_factory=lambda: [1.0])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    bootstrap: int = Field(1000, ge=100)
    save_models: bool = Field(False, description="keep each cell's classifier checkpoint")
    report_samples: int = Field(8, ge=0, description="images per arm in the report's sample grids")

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if not self.arms:
            raise ValueError("list at least one arm")
        for f in self.fractions:
            if not 0 < f <= 1:
                raise ValueError(f"fractions must lie in (0, 1], got {f}")
        if not self.seeds:
            raise ValueError("list at least one seed")
        if any(a.dp != "off" for a in self.arms) and not self.dp.epsilons:
            raise ValueError("an arm asks for DP but dp.epsilons is empty")
        return self


def _resolve(path: Path | None, base: Path) -> Path | None:
    return None if path is None else (path if path.is_absolute() else (base / path)).resolve()


def load_config(path: str | Path) -> StudyConfig:
    """Parse and validate a YAML study file; relative paths are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_config(raw, base=path.parent, source=str(path))


def _with_default_recipe(raw: dict) -> dict:
    """Grey (mammography) studies train with the ``mammo`` recipe unless ``train.recipe`` is given;
    ``recipe: null`` keeps the old default. RGB studies keep the old default (``histo`` is opt-in)."""
    data, train = raw.get("data"), raw.get("train", {})
    channels = data.get("channels", 1) if isinstance(data, dict) else None
    if channels != 1 or not isinstance(train, dict) or "recipe" in train:
        return raw
    return {**raw, "train": {**train, "recipe": DEFAULT_GREY_RECIPE}}


def parse_config(raw: dict, base: str | Path = ".", source: str = "study config") -> StudyConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = StudyConfig.model_validate(_with_default_recipe(raw))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
    base = Path(base)
    config.data.path = _resolve(config.data.path, base)
    config.data.patients_csv = _resolve(config.data.patients_csv, base)
    for test in config.external_tests:
        test.path = _resolve(test.path, base)
    for arm in config.arms:
        if arm.synthetic is not None:
            arm.synthetic.folder = _resolve(arm.synthetic.folder, base)
            arm.synthetic.generator = _resolve(arm.synthetic.generator, base)
            arm.synthetic.manifest = _resolve(arm.synthetic.manifest, base)
    if config.model.pretrained not in (None, "timm"):
        config.model.pretrained = str(_resolve(Path(config.model.pretrained), base))
    return config
