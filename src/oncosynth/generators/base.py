"""The generator layer: one protocol and one registry for every generator.

A generator is fitted on labelled images, then samples ``n`` images of a
named class. Every generator (the GANs here, style transfer and SinGAN later)
subclasses :class:`Generator`, registers itself under a name with
:func:`register_generator`, and is made with :func:`create_generator` or read
back with :func:`load_generator` -- the way timm's ``create_model`` works.

A subclass supplies five things:

* ``build()``: create its networks from ``self.classes``, ``self.channels``,
  ``self.size`` and ``self.config``;
* ``networks()``: the named ``nn.Module`` objects whose state is saved;
* ``train_step(reals, labels)``: one optimisation step on a batch of images in
  [-1, 1], returning the losses as floats;
* ``training_state()`` / ``load_training_state()``: what besides the weights a
  resumed run needs (optimiser states, ADA's p, ...);
* ``generate(z, labels)``: images in [-1, 1] from latents and class indices.

Subclasses that do not train by steps (style transfer) may override ``fit``
and ``sample`` as a whole; the checkpoint format stays the same.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from oncosynth.checkpoint import load_checkpoint, save_checkpoint
from oncosynth.distributed import SINGLE
from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.runtime import make_manifest

KIND_PREFIX = "generator/"


class Generator(abc.ABC):
    """Base class of all generators. See the module docstring for the protocol."""

    name: ClassVar[str] = ""
    conditional: ClassVar[bool] = True
    # True when train_step draws its randomness for the global batch and keeps
    # ``self.data_shard.share(...)`` of it, so torchrun ranks together equal one process.
    supports_distributed: ClassVar[bool] = False
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
        self.class_counts: torch.Tensor | None = None  # training images per class; set by the training loop
        self.data_shard = SINGLE  # which rows of each global batch this process trains on

    # ------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def build(self) -> None:
        """Create the networks (and optimisers) for the configured classes, channels and size."""

    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Named networks whose parameters and buffers make up a checkpoint."""

    @abc.abstractmethod
    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One optimisation step on images in [-1, 1]; returns the losses."""

    @abc.abstractmethod
    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents ``z`` and class indices (no grad needed)."""

    @property
    @abc.abstractmethod
    def z_dim(self) -> int:
        """Length of one latent vector."""

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers train_step steps (distributed training averages their gradients)."""
        return [v for v in vars(self).values() if isinstance(v, torch.optim.Optimizer)]

    def training_state(self) -> dict[str, Any]:
        """Optimiser states etc. that a resumed run needs (torch.save-able, tensors and plain types)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        del state

    def check_size(self, size: int) -> None:
        """Raise ConfigError for an image size the model cannot build (default: powers of two >= 32)."""
        if size < 32 or size & (size - 1):
            raise ConfigError(f"{self.name}: image size {size} is not a power of two >= 32 "
                              f"(e.g. 32, 64, 128, 256); other sizes are resampled when --size is left out")

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

    # ------------------------------------------------------------ training
    def fit(self, data: Any, run_folder: str | Path, steps: int, **options: Any) -> "Generator":
        """Train for ``steps`` steps in total, checkpointing into ``run_folder``.

        ``data`` is an ``oncosynth.data.Dataset`` (its training split is used),
        a ``(images, labels, classes)`` tuple or a ``TrainingData``. Options are
        those of :func:`oncosynth.generators.training.run_training` (batch_size,
        seed, device, resume, checkpoint_every, sample_every, log_every,
        tensorboard, progress, classes).
        """
        from oncosynth.generators.training import run_training

        run_training(self, data, run_folder, steps, **options)
        return self

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, class_name: str, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
        """``n`` images of ``class_name`` as a CPU float tensor N×C×H×W in [0, 1].

        Image ``i`` is drawn from latent seed ``seed + i``, so any single image
        can be made again with ``sample(1, class_name, seed + i)``.
        """
        if not self.built:
            raise ConfigError(f"{self.name}: the generator is not trained or loaded yet")
        if n < 0:
            raise ConfigError(f"n must be >= 0, not {n}")
        label = self.class_index(class_name)
        nets = self.networks()
        modes = {k: net.training for k, net in nets.items()}
        for net in nets.values():
            net.eval()
        out = []
        try:
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                z = torch.stack([torch.randn(self.z_dim, generator=torch.Generator().manual_seed(seed + start + i))
                                 for i in range(count)]).to(self.device)
                labels = torch.full((count,), label, dtype=torch.long, device=self.device)
                images = self.generate(z, labels)
                out.append(((images.float() + 1) / 2).clamp(0, 1).cpu())
        finally:
            for k, net in nets.items():
                net.train(modes[k])
        if not out:
            return torch.zeros(0, self.channels, self.size, self.size)
        return torch.cat(out)

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


# ---------------------------------------------------------------- registry ----
_REGISTRY: dict[str, type[Generator]] = {}
_ALIASES: dict[str, str] = {}


def register_generator(*aliases: str):
    """Class decorator: register a Generator subclass under its ``name`` and any aliases."""

    def wrap(cls: type[Generator]) -> type[Generator]:
        if not cls.name:
            raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
        _REGISTRY[cls.name] = cls
        for alias in aliases:
            _ALIASES[alias] = cls.name
        return cls

    return wrap


def list_generators() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def generator_class(name: str) -> type[Generator]:
    _import_builtin()
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        known = sorted(_REGISTRY) + sorted(f"{a} (= {t})" for a, t in _ALIASES.items())
        raise ConfigError(f"unknown generator '{name}'; known: {', '.join(known)}")
    return _REGISTRY[key]


def create_generator(name: str, preset: str | None = None, **config: Any) -> Generator:
    """Make an untrained generator by registry name, e.g. ``create_generator("cdcgan", width=16)``."""
    return generator_class(name)(preset=preset, **config)


def latest_checkpoint(run_folder: str | Path) -> Path | None:
    """The newest complete checkpoint under ``run_folder/checkpoints`` (config.json marks completion)."""
    folder = Path(run_folder) / "checkpoints"
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob("step-*") if (p / "config.json").is_file())
    return done[-1] if done else None


def load_generator(run_folder: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a trained generator from a run folder (final model, else its latest checkpoint)."""
    import json

    folder = Path(run_folder)
    if not (folder / "config.json").is_file():
        latest = latest_checkpoint(folder)
        if latest is None:
            raise CheckpointError(f"{folder}: no generator checkpoint here (no config.json, no checkpoints/step-*)")
        folder = latest
    try:
        kind = str(json.loads((folder / "config.json").read_text()).get("kind", ""))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{folder}/config.json: corrupt ({exc})") from None
    if not kind.startswith(KIND_PREFIX):
        raise CheckpointError(f"{folder}: checkpoint holds a '{kind or 'unknown'}', not a generator")
    return generator_class(kind[len(KIND_PREFIX):]).load(folder, device=device)


def _import_builtin() -> None:
    # Importing the modules registers their classes; lazily, so `import oncosynth.generators` stays light.
    from oncosynth.generators import cdcgan, singan, style_transfer, stylegan2  # noqa: F401
