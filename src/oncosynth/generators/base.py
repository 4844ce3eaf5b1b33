"""The protocol every generator honours: classes, fit, sample, save, load.

A generator is fitted on labelled images, then samples ``n`` images of a
named class. Every generator subclasses :class:`Generator`, registers itself
with :func:`oncosynth.generators.registry.register_generator` and is made with
``create_generator`` or read back with ``load_generator``.

A subclass supplies:

* ``fit(data, run_folder, ...)``: train (or otherwise prepare) on the data and
  write the model into ``run_folder``;
* ``sample(n, class_name, seed)``: ``n`` images of a class, N×C×H×W in [0, 1];
* ``build()``: create its modules from ``self.classes``, ``self.channels``,
  ``self.size`` and ``self.config``;
* ``networks()``: the named ``nn.Module`` objects whose state is saved.

``save`` / ``load`` (safetensors + config.json + manifest.json) are shared.
The step-wise GAN loop (``train_step`` / ``generate``) lives in
:class:`oncosynth.generators.gan.SteppedGAN`, which the GANs extend.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from oncosynth.checkpoint import load_checkpoint, save_checkpoint
from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.generators.registry import KIND_PREFIX
from oncosynth.runtime.manifest import make_manifest


class Generator(abc.ABC):
    """Base class of all generators. See the module docstring for the protocol."""

    name: ClassVar[str] = ""
    conditional: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, preset: str | None = None, **config: Any):
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise ConfigError(f"{self.name}: unknown option(s) {unknown}; known: {sorted(self.defaults)}")
        merged = dict(self.defaults)
        if preset is not None:
            if preset not in self.presets:
                raise ConfigError(f"{self.name}: unknown preset '{preset}'; known: {sorted(self.presets)}")
            merged.update(self.presets[preset])
        merged.update({k: v for k, v in config.items() if v is not None})
        self.config: dict[str, Any] = merged
        self.preset = preset
        self.classes: list[str] = []
        self.channels: int | None = None
        self.size: int | None = None
        self.step = 0
        self.device = torch.device("cpu")
        self.manifest: dict[str, Any] = {}

    # ------------------------------------------------------------ the protocol
    @abc.abstractmethod
    def fit(self, data: Any, run_folder: str | Path, *args: Any, **options: Any) -> "Generator":
        """Learn from ``data`` and write the model into ``run_folder``; returns self."""

    @abc.abstractmethod
    def sample(self, n: int, class_name: str, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
        """``n`` images of ``class_name`` as a CPU float tensor N×C×H×W in [0, 1]; image ``i``
        depends only on ``seed + i``."""

    @abc.abstractmethod
    def build(self) -> None:
        """Create the modules for the configured classes, channels and size."""

    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Named modules whose parameters and buffers make up a checkpoint."""

    def check_sample_options(self, **options: Any) -> None:
        """Raise ConfigError, before any work, for options ``sample`` does not take (or, in a subclass
        that knows them, bad values); works on a generator that is not trained yet."""
        import inspect

        accepted = inspect.signature(self.sample).parameters
        unknown = sorted(k for k in options if k not in accepted or k in ("n", "class_name", "seed", "batch_size"))
        if unknown:
            raise ConfigError(f"{self.name} does not take sampling option(s) {unknown}")

    def check_size(self, size: int) -> None:
        """Raise ConfigError for an image size the model cannot build (default: powers of two >= 32)."""
        if size < 32 or size & (size - 1):
            raise ConfigError(f"{self.name}: image size {size} is not a power of two >= 32 "
                              f"(e.g. 32, 64, 128, 256); other sizes are resampled when --size is left out")

    def restore_config(self, config: dict[str, Any]) -> None:
        """Read what :meth:`checkpoint_config` adds beyond the shared keys (called before ``build``)."""
        del config

    # ------------------------------------------------------------ setup
    @property
    def built(self) -> bool:
        return bool(self.classes) and self.size is not None

    def configure(self, classes: list[str], channels: int, size: int) -> None:
        """Fix the classes, channel count and size, then build the networks."""
        if self.conditional and len(classes) < 2:
            raise ConfigError(f"{self.name} is class-conditional and needs at least two classes; "
                              f"the training data have {list(classes)}")
        if channels not in (1, 3):
            raise ConfigError(f"{self.name}: images must have 1 or 3 channels, not {channels}")
        self.check_size(size)
        self.classes, self.channels, self.size = list(classes), int(channels), int(size)
        self.build()
        self.to(self.device)

    def to(self, device: str | torch.device) -> "Generator":
        self.device = torch.device(device)
        for net in self.networks().values():
            net.to(self.device)
        return self

    def class_index(self, class_name: str) -> int:
        if class_name not in self.classes:
            raise ConfigError(f"class '{class_name}' is unknown to this {self.name} generator; "
                              f"it knows {self.classes}")
        return self.classes.index(class_name)

    # ------------------------------------------------------------ checkpoints
    def checkpoint_config(self) -> dict[str, Any]:
        return {"kind": KIND_PREFIX + self.name, "method": self.name, "preset": self.preset,
                "config": self.config, "classes": self.classes, "channels": self.channels,
                "size": self.size, "step": self.step}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for prefix, net in self.networks().items():
            for key, value in net.state_dict().items():
                tensors[f"{prefix}.{key}"] = value
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        for prefix, net in self.networks().items():
            own = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            try:
                net.load_state_dict(own, strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise CheckpointError(f"{where}: weights of '{prefix}' do not fit the saved config ({first})") from None

    def save(self, folder: str | Path, manifest: dict[str, Any] | None = None) -> Path:
        """Write weights (safetensors), config.json and manifest.json into ``folder``."""
        if not self.built:
            raise ConfigError(f"{self.name}: nothing to save, the generator is not built")
        config = self.checkpoint_config()
        manifest = manifest or self.manifest or make_manifest(config["kind"], config)
        manifest = {**manifest, "step": self.step}
        return save_checkpoint(folder, self.state_tensors(), config, manifest)

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "checkpoint") -> "Generator":
        try:
            gen = cls(preset=None, **config["config"])
            gen.config.update(config["config"])  # the saved values verbatim, None included
            gen.preset = config.get("preset")
            gen.step = int(config.get("step", 0))
            gen.restore_config(config)
            gen.configure(list(config["classes"]), int(config["channels"]), int(config["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: config.json is incomplete or invalid ({exc!r})") from None
        return gen

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "Generator":
        """Read a checkpoint folder written by :meth:`save`."""
        tensors, config, manifest = load_checkpoint(folder, kind=KIND_PREFIX + cls.name, device="cpu")
        gen = cls.from_config(config, where=str(folder))
        gen.load_state_tensors(tensors, where=str(folder))
        gen.manifest = manifest
        return gen.to(device)
