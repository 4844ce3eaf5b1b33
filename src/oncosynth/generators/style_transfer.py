"""Neural style transfer (Gatys et al. 2016), batched: many (content, style) pairs optimised together.

For each pair the image ``x`` starts as the content image and minimises

    alpha * content(x) + beta * style(x)

* ``content``: mean squared difference of the maps at one named layer
  (``conv_k``, see :class:`oncosynth.features.LayerFeatures`) between ``x`` and
  the content image;
* ``style``: mean over the style layers of the mean squared difference of Gram
  matrices, each Gram ``F Fᵀ / (C·H·W)`` for maps ``F`` of C channels over H×W
  positions. This is the normalisation of the PyTorch tutorial that the paper's
  code builds on (Gatys et al.'s ``1/(4 N² M²)`` differs from it by the constant
  factor ``4/C²`` per layer), so the paper's weights (beta 100,000, alpha 1)
  keep their meaning.

Batching. Every pair has its own settings (content layer, weights, steps, learning
rate), its own loss and its own stopping point. Each optimisation step runs the
network on the pairs that are still active only; a pair that has reached its
steps drops out of the batch and stops changing. The feature network is frozen
and in eval mode, so a pair's gradient depends on that pair alone, and Adam's
update is element-wise with a per-pair step counter: the batched result equals
the one-pair-at-a-time result up to floating-point reduction order (tested to
1e-4 in pixel values on CPU).

``optimizer="lbfgs"`` uses torch's L-BFGS with a strong-Wolfe line search. Its
line search would couple the pairs of a batch, so it optimises one pair at a
time (same results, no batching speed-up).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from oncosynth.errors import ConfigError
from oncosynth.features import LayerFeatures, create_layer_features
from oncosynth.generators.base import Generator
from oncosynth.generators.registry import register_generator

DEFAULT_STYLE_LAYERS = ("conv_1", "conv_2", "conv_3", "conv_4", "conv_5")
OPTIMIZERS = ("adam", "lbfgs")


@dataclass(frozen=True)
class StyleSettings:
    """The settings of one style-transfer run; defaults are the paper's baseline."""

    content_layer: str = "conv_5"
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    steps: int = 250
    content_weight: float = 1.0
    style_weight: float = 100_000.0
    lr: float = 0.02

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"style transfer: steps must be >= 1, not {self.steps}")
        if self.content_weight < 0 or self.style_weight < 0:
            raise ConfigError("style transfer: content and style weights must be >= 0")
        if not self.style_layers:
            raise ConfigError("style transfer: name at least one style layer")
        if self.lr <= 0:
            raise ConfigError(f"style transfer: lr must be > 0, not {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "style_layers": list(self.style_layers)}

    def with_(self, **changes: Any) -> "StyleSettings":
        return replace(self, **changes)


@dataclass
class StyleResult:
    images: torch.Tensor                # N×C×H×W in [0, 1], CPU
    content_loss: torch.Tensor          # N, at the final image (unweighted)
    style_loss: torch.Tensor            # N, at the final image (unweighted)
    total_loss: torch.Tensor            # N, alpha·content + beta·style at the final image
    steps: torch.Tensor                 # N, optimisation steps taken
    seconds: float = 0.0
    history: list[list[float]] = field(default_factory=list)  # per pair: total loss at each step


def gram(maps: torch.Tensor) -> torch.Tensor:
    """N×C×H×W -> N×C×C, normalised by C·H·W."""
    n, c, h, w = maps.shape
    flat = maps.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def match_pair(content: torch.Tensor, style: torch.Tensor, resample: bool = True) -> torch.Tensor:
    """The style images brought to the content images' channels and size, or a ConfigError."""
    from oncosynth.data.transforms import convert_images

    if content.ndim != 4 or style.ndim != 4:
        raise ConfigError(f"style transfer expects N×C×H×W images, got {tuple(content.shape)} and "
                          f"{tuple(style.shape)}")
    if content.shape[0] != style.shape[0]:
        raise ConfigError(f"{content.shape[0]} content images but {style.shape[0]} style images")
    if content.shape[1:] == style.shape[1:]:
        return style
    if not resample:
        raise ConfigError(f"content images are {tuple(content.shape[1:])} (C×H×W) but style images "
                          f"{tuple(style.shape[1:])}; resample them to one size and channel count")
    if content.shape[-2] != content.shape[-1]:
        raise ConfigError(f"cannot resample style images to a non-square content size {tuple(content.shape[-2:])}")
    return convert_images(style, size=content.shape[-1], channels=content.shape[1])


def _import_encoder_packages() -> None:
    # ``encoder:<checkpoint>`` specs name a classifier or an anomaly detector; importing their
    # packages registers their loaders with oncosynth.features (which imports neither).
    import oncosynth.classifiers  # noqa: F401
    import oncosynth.quality.anomaly  # noqa: F401


class StyleTransfer:
    """Batched style transfer on a per-layer feature network (see the module docstring)."""

    def __init__(self, features: LayerFeatures | str, optimizer: str = "adam", device: str | torch.device = "cpu",
                 resample: bool = True):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{optimizer}'; choose one of {OPTIMIZERS}")
        if isinstance(features, str):
            _import_encoder_packages()
            features = create_layer_features(features, device)
        self.features = features
        self.optimizer, self.resample = optimizer, resample
        self.device = torch.device(device)
        self.features.to(self.device)

    def check(self, settings: Sequence[StyleSettings]) -> None:
        """Every named layer must exist in the feature network (ConfigError before any work)."""
        layers = {s.content_layer for s in settings} | {l for s in settings for l in s.style_layers}
        self.features.check_layers(sorted(layers, key=lambda n: (len(n), n)))

    def run(self, content: torch.Tensor, style: torch.Tensor,
            settings: StyleSettings | Sequence[StyleSettings] = StyleSettings(),
            progress: Callable[[int, int], None] | None = None, record_history: bool = False) -> StyleResult:
        """Optimise one image per (content[i], style[i]) pair with ``settings[i]`` (or one for all)."""
        n = content.shape[0]
        settings = [settings] * n if isinstance(settings, StyleSettings) else list(settings)
        if len(settings) != n:
            raise ConfigError(f"{len(settings)} settings for {n} pairs")
        style = match_pair(content, style, self.resample)
        self.check(settings)
        started = time.perf_counter()
        if n == 0:
            empty = torch.zeros(0)
            return StyleResult(content.clone(), empty, empty, empty, empty.long())
        content = content.float().to(self.device)
        style = style.float().to(self.device)
        targets = self._targets(content, style, settings)
        if self.optimizer == "adam":
            x, steps, history = self._adam(content, targets, settings, progress, record_history)
        else:
            x, steps, history = self._lbfgs(content, targets, settings, progress, record_history)
        with torch.no_grad():
            c_loss, s_loss = self._losses(x, targets, settings, torch.arange(n, device=self.device))
        alpha = torch.tensor([s.content_weight for s in settings], device=self.device)
        beta = torch.tensor([s.style_weight for s in settings], device=self.device)
        return StyleResult(x.detach().cpu(), c_loss.cpu(), s_loss.cpu(), (alpha * c_loss + beta * s_loss).cpu(),
                           steps.cpu(), time.perf_counter() - started, history)

    # ------------------------------------------------------------ losses
    def _targets(self, content, style, settings) -> dict[str, Any]:
        content_layers = sorted({s.content_layer for s in settings})
        style_layers = sorted({l for s in settings for l in s.style_layers})
        with torch.no_grad():
            c_maps = self.features(content, content_layers)
            s_maps = self.features(style, style_layers)
        n = content.shape[0]
        c_onehot = torch.zeros(n, len(content_layers), device=self.device)
        s_weight = torch.zeros(n, len(style_layers), device=self.device)
        for i, s in enumerate(settings):
            c_onehot[i, content_layers.index(s.content_layer)] = 1.0
            for layer in s.style_layers:
                s_weight[i, style_layers.index(layer)] = 1.0 / len(s.style_layers)
        return {"content_layers": content_layers, "style_layers": style_layers,
                "content": {k: c_maps[k].detach() for k in content_layers},
                "gram": {k: gram(s_maps[k]).detach() for k in style_layers},
                "c_onehot": c_onehot, "s_weight": s_weight}

    def _losses(self, x, targets, settings, index) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair (content, style) losses of images ``x`` for the pairs ``index``."""
        c_layers, s_layers = targets["content_layers"], targets["style_layers"]
        maps = self.features(x, c_layers + [l for l in s_layers if l not in c_layers])
        onehot, weights = targets["c_onehot"][index], targets["s_weight"][index]
        content = x.new_zeros(len(index))
        for j, layer in enumerate(c_layers):
            if bool(onehot[:, j].any()):
                diff = (maps[layer] - targets["content"][layer][index]).pow(2).mean(dim=(1, 2, 3))
                content = content + onehot[:, j] * diff
        style = x.new_zeros(len(index))
        for j, layer in enumerate(s_layers):
            if bool(weights[:, j].any()):
                diff = (gram(maps[layer]) - targets["gram"][layer][index]).pow(2).mean(dim=(1, 2))
                style = style + weights[:, j] * diff
        return content, style

    # ------------------------------------------------------------ optimisers
    def _adam(self, content, targets, settings, progress, record_history, betas=(0.9, 0.999), eps=1e-8):
        n = content.shape[0]
        dev = self.device
        x = content.clone()
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        t = torch.zeros(n, device=dev)
        budget = torch.tensor([s.steps for s in settings], device=dev)
        lr = torch.tensor([s.lr for s in settings], device=dev).view(-1, 1, 1, 1)
        alpha = torch.tensor([s.content_weight for s in settings], device=dev)
        beta = torch.tensor([s.style_weight for s in settings], device=dev)
        history: list[list[float]] = [[] for _ in range(n)]
        total_steps = int(budget.max())
        for step in range(total_steps):
            index = torch.nonzero(budget > step).flatten()  # the pairs still running
            xs = x[index].requires_grad_(True)
            c_loss, s_loss = self._losses(xs, targets, settings, index)
            loss = alpha[index] * c_loss + beta[index] * s_loss
            (grad,) = torch.autograd.grad(loss.sum(), xs)
            with torch.no_grad():
                t[index] += 1
                ti = t[index].view(-1, 1, 1, 1)
                m[index] = betas[0] * m[index] + (1 - betas[0]) * grad
                v[index] = betas[1] * v[index] + (1 - betas[1]) * grad * grad
                m_hat = m[index] / (1 - betas[0] ** ti)
                v_hat = v[index] / (1 - betas[1] ** ti)
                x[index] = (xs.detach() - lr[index] * m_hat / (v_hat.sqrt() + eps)).clamp_(0, 1)
            if record_history:
                for k, i in enumerate(index.tolist()):
                    history[i].append(float(loss[k]))
            if progress is not None:
                progress(step + 1, total_steps)
        return x, t.long(), history

    def _lbfgs(self, content, targets, settings, progress, record_history):
        n = content.shape[0]
        out, steps, history = content.clone(), torch.zeros(n, dtype=torch.long), [[] for _ in range(n)]
        for i, s in enumerate(settings):
            index = torch.tensor([i], device=self.device)
            x = content[i : i + 1].clone().requires_grad_(True)
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=s.steps, max_eval=s.steps,
                                    tolerance_grad=0.0, tolerance_change=0.0, history_size=50,
                                    line_search_fn="strong_wolfe")
            calls = [0]

            def closure():
                opt.zero_grad()
                c_loss, s_loss = self._losses(x.clamp(0, 1), targets, settings, index)
                loss = (s.content_weight * c_loss + s.style_weight * s_loss).sum()
                loss.backward()
                calls[0] += 1
                if record_history:
                    history[i].append(float(loss))
                return loss

            opt.step(closure)
            with torch.no_grad():
                out[i] = x.detach().clamp(0, 1)[0]
            steps[i] = calls[0]
            if progress is not None:
                progress(i + 1, n)
        return out, steps, history


def transfer_one_at_a_time(transfer: StyleTransfer, content: torch.Tensor, style: torch.Tensor,
                           settings: StyleSettings | Sequence[StyleSettings] = StyleSettings()) -> StyleResult:
    """The reference: each pair in its own call (what the paper's code did). Same return type as ``run``."""
    n = content.shape[0]
    settings = [settings] * n if isinstance(settings, StyleSettings) else list(settings)
    started = time.perf_counter()
    parts = [transfer.run(content[i : i + 1], style[i : i + 1], settings[i]) for i in range(n)]
    return StyleResult(torch.cat([p.images for p in parts]), torch.cat([p.content_loss for p in parts]),
                       torch.cat([p.style_loss for p in parts]), torch.cat([p.total_loss for p in parts]),
                       torch.cat([p.steps for p in parts]), time.perf_counter() - started)


# ------------------------------------------------------------ generator protocol ----

class _Pool(nn.Module):
    """The real images style transfer draws from, kept as buffers so they live in the checkpoint."""

    def __init__(self):
        super().__init__()
        self.register_buffer("images", torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))


@register_generator("gatys", "nst")
class StyleTransferGenerator(Generator):
    """Style transfer behind the generator protocol (no gates; the gated pipeline is ``oncosynth.quality``).

    ``fit`` keeps the training images (uint8, in the checkpoint: it needs no training steps);
    ``sample(n, "malignant")`` makes image ``i`` from a content image of ``content_class`` (default: the
    first other class) and a style image of the asked class, both drawn with seed ``seed + i``.
    """

    name = "style-transfer"
    defaults = {"feature_net": "vgg19:download", "content_class": None, "content_layer": "conv_5",
                "style_layers": list(DEFAULT_STYLE_LAYERS), "steps": 250, "content_weight": 1.0,
                "style_weight": 100_000.0, "lr": 0.02, "optimizer": "adam", "size": None, "channels": None}

    def build(self) -> None:
        self.pool = _Pool()
        self._transfer = None

    def networks(self) -> dict[str, nn.Module]:
        return {"pool": self.pool}

    def check_size(self, size: int) -> None:
        if size < 16:
            raise ConfigError(f"style transfer: image size {size} is below 16 px")

    def settings(self) -> StyleSettings:
        c = self.config
        return StyleSettings(c["content_layer"], tuple(c["style_layers"]), int(c["steps"]),
                             float(c["content_weight"]), float(c["style_weight"]), float(c["lr"]))

    def fit(self, data, run_folder, steps: int = 0, classes: list[str] | None = None, seed: int = 0,
            device: str = "cpu", allow_leakage: bool = False, **options) -> "StyleTransferGenerator":
        from oncosynth.generators.training import prepare_data, split_leakage
        from oncosynth.io import check_output_folder
        from oncosynth.runtime.devices import resolve_device
        from oncosynth.runtime.manifest import make_manifest

        del steps, options  # nothing to train
        check_output_folder(Path(run_folder), "--out")  # before the data are read
        self.device = resolve_device(device)  # where sample() after fit runs the feature network
        if not isinstance(data, tuple):
            from oncosynth.data import as_dataset

            dataset = as_dataset(data)
            leakage = split_leakage(dataset, allow_leakage)
            data = dataset.split("train") if "train" in dataset.splits else dataset
        else:
            leakage = []
        prepared = prepare_data(data, classes=classes, size=self.config.get("size"),
                                channels=self.config.get("channels"))
        self.configure(prepared.classes, int(prepared.images.shape[1]), int(prepared.images.shape[-1]))
        self.settings()  # invalid settings fail here
        self.transfer().check([self.settings()])
        self.pool.images, self.pool.labels = prepared.images.clone(), prepared.labels.clone()
        self.manifest = make_manifest("generator/" + self.name, self.checkpoint_config(), seed=seed,
                                      data_hash=prepared.data_hash, **({"leakage": leakage} if leakage else {}))
        self.save(run_folder)
        return self

    def load_state_tensors(self, tensors, where: str = "checkpoint") -> None:
        self.pool.images, self.pool.labels = tensors["pool.images"], tensors["pool.labels"]

    def transfer(self) -> StyleTransfer:
        if self._transfer is None:
            self._transfer = StyleTransfer(self.config["feature_net"], optimizer=self.config["optimizer"],
                                           device=self.device)
        return self._transfer

    @torch.no_grad()
    def sample(self, n: int, class_name: str, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
        import numpy as np

        style_label = self.class_index(class_name)
        content_name = self.config.get("content_class") or next(c for c in self.classes if c != class_name)
        content_label = self.class_index(content_name)
        content_pool = torch.nonzero(self.pool.labels == content_label).flatten()
        style_pool = torch.nonzero(self.pool.labels == style_label).flatten()
        out = []
        for start in range(0, n, batch_size):
            picks = [np.random.default_rng(seed + i) for i in range(start, min(n, start + batch_size))]
            c_idx = [int(content_pool[r.integers(len(content_pool))]) for r in picks]
            s_idx = [int(style_pool[r.integers(len(style_pool))]) for r in picks]
            with torch.enable_grad():
                result = self.transfer().run(self.pool.images[c_idx].float() / 255,
                                             self.pool.images[s_idx].float() / 255, self.settings())
            out.append(result.images)
        return torch.cat(out) if out else torch.zeros(0, self.channels, self.size, self.size)
