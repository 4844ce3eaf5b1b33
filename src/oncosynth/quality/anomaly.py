"""The anomaly detector: a U-Net-style convolutional autoencoder trained on real images.

Architecture (the style-transfer paper's): double 3×3 conv blocks (conv-BN-ReLU twice)
at widths 64→128→256→512→512 with 2×2 max-pooling between them, then bilinear
upsampling with skip connections (concatenation) back to full resolution and a
1×1 conv with a sigmoid. It is trained on real training images with MSE; the
anomaly score of an image is its mean absolute (L1) reconstruction error, and
the threshold defaults to the 95th percentile of the scores of real validation
images. An image scoring above the threshold is rejected as unrealistic.

Width presets: ``paper`` (64…512, for GPUs) and ``cpu`` (8…64, 64× fewer
multiply-adds; what runs on the 2-core development machine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from oncosynth.checkpoint import load_checkpoint, save_checkpoint
from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.features.base import FeatureNet
from oncosynth.features.encoders import register_encoder
from oncosynth.runtime.manifest import make_manifest

KIND = "anomaly-detector/unet-ae"
PRESETS: dict[str, tuple[int, ...]] = {"paper": (64, 128, 256, 512, 512), "cpu": (8, 16, 32, 64, 64)}


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetAutoencoder(nn.Module):
    """Images in [0, 1] -> reconstructions in [0, 1]. Encoder blocks are registered first, so
    their convs are ``conv_1`` … ``conv_10`` for :class:`oncosynth.features.LayerFeatures`."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = PRESETS["paper"]):
        super().__init__()
        if len(widths) < 2:
            raise ConfigError(f"the autoencoder needs at least two widths, got {list(widths)}")
        self.config = {"in_chans": int(in_chans), "widths": [int(w) for w in widths]}
        chans = [in_chans, *widths]
        self.down = nn.ModuleList(_double_conv(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.up = nn.ModuleList(_double_conv(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], in_chans, 1)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.down) - 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        h = skips[-1]
        for i in reversed(range(len(self.up))):
            h = F.interpolate(h, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            h = self.up[i](torch.cat([h, skips[i]], dim=1))
        return torch.sigmoid(self.head(h))


class AnomalyDetector:
    """A trained autoencoder with its input size, channels and rejection threshold."""

    def __init__(self, model: UNetAutoencoder, size: int, threshold: float | None = None,
                 percentile: float = 95.0, manifest: dict[str, Any] | None = None):
        if size % model.factor:
            raise ConfigError(f"anomaly detector: image size {size} must be a multiple of {model.factor} "
                              f"(2^(blocks-1))")
        self.model = model.eval()
        self.size, self.threshold, self.percentile = int(size), threshold, float(percentile)
        self.manifest = manifest or {}

    @property
    def channels(self) -> int:
        return self.model.config["in_chans"]

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        from oncosynth.data.transforms import convert_images, to_float

        return convert_images(to_float(images), size=self.size, channels=self.channels)

    @torch.no_grad()
    def score(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """Mean L1 reconstruction error per image (images N×C×H×W, float [0, 1] or uint8; resampled)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            x = self._prepare(images[start : start + batch_size]).to(device)
            out.append((self.model(x) - x).abs().mean(dim=(1, 2, 3)).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    def calibrate(self, val_images: torch.Tensor, percentile: float | None = None) -> float:
        """Set the threshold to the given percentile (default 95) of the scores of real validation images."""
        if percentile is not None:
            self.percentile = float(percentile)
        scores = self.score(val_images)
        if len(scores) == 0:
            raise ConfigError("anomaly detector: no validation images to set the threshold from")
        self.threshold = float(np.percentile(scores, self.percentile))
        return self.threshold

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            raise ConfigError("anomaly detector has no threshold; calibrate it on validation images")
        return np.asarray(scores) <= self.threshold

    # ------------------------------------------------------------ checkpoints
    def save(self, folder: str | Path, manifest: dict[str, Any] | None = None) -> Path:
        config = {"kind": KIND, **self.model.config, "size": self.size, "threshold": self.threshold,
                  "percentile": self.percentile}
        return save_checkpoint(folder, self.model.state_dict(), config,
                               manifest or self.manifest or make_manifest(KIND, config))

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "AnomalyDetector":
        tensors, config, manifest = load_checkpoint(folder, kind="anomaly-detector", device="cpu")
        model = _model_from(tensors, config, str(folder))
        detector = cls(model, int(config["size"]), config.get("threshold"), config.get("percentile", 95.0), manifest)
        detector.model.to(device)
        return detector


def _model_from(tensors: dict[str, torch.Tensor], config: dict[str, Any], where: str) -> UNetAutoencoder:
    try:
        model = UNetAutoencoder(int(config["in_chans"]), tuple(int(w) for w in config["widths"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: config.json is incomplete ({exc!r})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the recorded architecture "
                              f"({str(exc).splitlines()[0]})") from None
    return model.eval()


def train_autoencoder(train_images: torch.Tensor, size: int, channels: int = 1,
                      widths: tuple[int, ...] = PRESETS["cpu"], epochs: int = 10, batch_size: int = 16,
                      lr: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu",
                      progress: Callable[[dict], None] | None = None) -> tuple[UNetAutoencoder, list[dict]]:
    """Fit the autoencoder with MSE on real images (uint8 or float [0, 1]); returns it and the loss history."""
    from oncosynth.data.transforms import convert_images, to_float

    if len(train_images) < 2:
        raise ConfigError("anomaly detector: fewer than 2 training images")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = UNetAutoencoder(channels, widths).to(device)
    if size % model.factor:
        raise ConfigError(f"anomaly detector: image size {size} must be a multiple of {model.factor}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        model.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train_images), generator=generator)
        for start in range(0, len(order) - 1, batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:
                break
            x = convert_images(to_float(train_images[index]), size=size, channels=channels).to(device)
            loss = F.mse_loss(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(index), seen + len(index)
        record = {"epoch": epoch + 1, "mse": total / max(seen, 1), "seconds": time.perf_counter() - started}
        history.append(record)
        if progress is not None:
            progress(record)
    return model.eval(), history


HELD_OUT = 0.15  # share of the training images that sets the threshold when there is no val split


def held_out_split(n: int, seed: int, share: float = HELD_OUT) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (held-out, kept) indices of ``n`` images: ``share`` of them (at least one) held out."""
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(share * n)))
    return order[:cut], order[cut:]


def fit_anomaly_detector(data: Any, out: str | Path | None = None, classes: list[str] | None = None,
                         size: int | None = None, channels: int | None = None, preset: str = "cpu",
                         widths: tuple[int, ...] | None = None, epochs: int = 10, batch_size: int = 16,
                         lr: float = 1e-3, percentile: float = 95.0, seed: int = 0, device: str = "cpu",
                         progress: bool = True) -> AnomalyDetector:
    """Train on the data set's train split, set the threshold on its val split, save to ``out``.

    ``data`` is a path or a Dataset. Without a val split, a seeded 15% of the
    training images is held out for the threshold.
    """
    from oncosynth.data import as_dataset
    from oncosynth.data.decode import load_images
    from oncosynth.io import check_output_folder
    from oncosynth.runtime.devices import resolve_device

    if out is not None:
        check_output_folder(Path(out), "--out")  # before any training
    dataset = as_dataset(data)
    if widths is None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown anomaly-detector preset '{preset}'; known: {sorted(PRESETS)}")
        widths = PRESETS[preset]
    for name in classes or []:
        dataset.class_index(name)
    keep = set(classes or dataset.classes)
    records = [r for r in dataset.records if r.label in keep]
    train = [r for r in records if r.split == "train"] or [r for r in records if r.split not in ("val", "test")]
    val = [r for r in records if r.split == "val"]
    if not val:
        held, kept = held_out_split(len(train), seed)
        val, train = [train[i] for i in held], [train[i] for i in kept]
    train_images = load_images(train, size=size, channels=channels)
    size = size or int(train_images.shape[-1])
    channels = int(train_images.shape[1])
    val_images = load_images(val, size=size, channels=channels)
    report = (lambda r: print(f"anomaly AE epoch {r['epoch']}: mse {r['mse']:.5f} ({r['seconds']:.0f} s)",
                              flush=True)) if progress else None
    dev = resolve_device(device)
    model, history = train_autoencoder(train_images, size, channels, tuple(widths), epochs, batch_size, lr, seed,
                                       dev, report)
    detector = AnomalyDetector(model, size, percentile=percentile)
    threshold = detector.calibrate(val_images)
    config = {"preset": preset if widths == PRESETS.get(preset) else None, "widths": list(widths),
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "size": size, "classes": sorted(keep),
              "percentile": percentile}
    detector.manifest = make_manifest(KIND, config, seed=seed, history=history, threshold=threshold,
                                      train_images=len(train), val_images=len(val),
                                      val_scores=detector.score(val_images).tolist())
    detector.model.cpu()
    if out is not None:
        detector.save(out)
    return detector


class AnomalyEncoderFeatures(FeatureNet):
    """``encoder:<anomaly detector checkpoint>``: the autoencoder's encoder as a feature network
    (embedding: global average of the bottleneck; spatial: the first block's maps)."""

    def __init__(self, model: UNetAutoencoder, name: str, input_size: int | None):
        super().__init__()
        self.model = model.eval()
        self.name, self.in_chans, self.input_size, self.normalise = name, model.config["in_chans"], input_size, None

    @classmethod
    def from_checkpoint(cls, tensors, config, name: str, input_size: int | None) -> "AnomalyEncoderFeatures":
        return cls(_model_from(tensors, config, name), name, input_size)

    def embed(self, x):
        return self.model.encode(x)[-1].mean(dim=(2, 3))

    def embed_spatial(self, x):
        return self.model.down[0](x)

    def layer_body(self):
        return self.model, self.model.encode


def _load_anomaly_encoder(folder: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any], name: str,
                          input_size: int | None) -> FeatureNet:
    del folder
    return AnomalyEncoderFeatures.from_checkpoint(tensors, config, name, input_size)


register_encoder("anomaly-detector", _load_anomaly_encoder)


def load_anomaly_detector(folder: str | Path, device: str | torch.device = "cpu") -> AnomalyDetector:
    return AnomalyDetector.load(folder, device=device)
