"""Feature networks for fidelity metrics: one registry, one factory.

A feature network maps images N×C×H×W in [0, 1] (1 or 3 channels, any size)
to embeddings N×D. Scores computed in different feature spaces are not
comparable, so every network carries a ``.name`` that is stored next to each
number it produced (e.g. ``inception-v3[imagenet-download]``).

Specs understood by ``create_feature_net(spec, device)``:

- ``inception:<weights file>`` or ``inception:download`` -- torchvision's
  Inception-v3, 2048-d pool features. The file is a state dict written with
  ``torch.save`` (loaded with ``weights_only=True``) or a ``.safetensors``
  file. Note: torchvision's ImageNet weights are not the TensorFlow weights
  that published FID numbers use, so our FIDs are comparable only with
  each other.
- ``vgg19:<weights file>`` or ``vgg19:download`` -- VGG-19, 512-d
  global-average-pooled last conv block.
- ``encoder:<checkpoint folder>`` -- an encoder trained by oncosynth on the
  user's data (the "domain encoder"): a classifier checkpoint (kind
  ``classifier``, loaded with ``oncosynth.classifiers.load_classifier``; its
  ``.features(x)`` is the embedding), a small CNN written by
  ``save_small_encoder`` (kind ``feature-net/small-cnn``) or the encoder of
  the anomaly detector (kind ``anomaly-detector/...``, ``oncosynth.quality``).
- ``random-cnn:<seed>`` -- a randomly initialised small CNN: a cheap,
  deterministic feature space for tests and smoke runs (not for reporting).

Every network also has ``.spatial(x) -> N×C×h×w``, the early feature maps
that single-image metrics such as SIFID compare. ``create_layer_features(spec)``
gives named intermediate layers (``conv_1``, ``conv_2``, ...) of the same
networks, for style transfer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from oncosynth.checkpoint import read_weights_file
from oncosynth.errors import CheckpointError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def adapt_channels(x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey as ITU-R 601 luma (PIL's "L"); other counts are an error."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1:
        weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x[:, :3] * weights).sum(1, keepdim=True)
    raise ConfigError(f"{name}: cannot adapt {x.shape[1]} channels to {channels}")


class FeatureNet(nn.Module):
    """Base class: input adaptation (channels, size, normalisation) + embedding."""

    name: str = "feature-net"
    in_chans: int = 3
    input_size: int | None = None  # resize every input to this square size (None: keep)
    normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected images N×C×H×W, got shape {tuple(x.shape)}")
        x = adapt_channels(x.float(), self.in_chans, self.name)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        if self.normalise is not None:
            mean, std = (x.new_tensor(v).view(1, -1, 1, 1) for v in self.normalise)
            x = (x - mean) / std
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # prepared input -> N×D
        raise NotImplementedError

    def embed_spatial(self, x: torch.Tensor) -> torch.Tensor:  # prepared input -> N×C×h×w
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.prepare(x.to(self.device)))

    @torch.no_grad()
    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_spatial(self.prepare(x.to(self.device)))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


# --------------------------------------------------------------------------- nets
class InceptionFeatures(FeatureNet):
    """torchvision Inception-v3; pool3 (2048-d) embedding; spatial = after the first max-pool (64 ch)."""

    def __init__(self, state_dict: dict[str, torch.Tensor] | None, name: str, input_size: int = 299):
        super().__init__()
        from torchvision.models import inception_v3

        # transform_input=True matches torchvision's ImageNet weights (ImageNet-normalised input).
        self.net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        if state_dict is not None:
            _load_state(self.net, state_dict, name)
        self.net.fc = nn.Identity()
        self.net.eval()
        self.name, self.input_size, self.normalise = name, input_size, (IMAGENET_MEAN, IMAGENET_STD)
        if input_size < 75:
            raise ConfigError(f"{name}: Inception-v3 needs inputs of at least 75 px, got {input_size}")

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n._transform_input(x)
        x = n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x)))
        return n.maxpool1(x)

    def embed(self, x):
        n = self.net
        x = self._stem(x)
        x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c,
                      n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = block(x)
        return n.avgpool(x).flatten(1)

    def embed_spatial(self, x):
        return self._stem(x)


class VGGFeatures(FeatureNet):
    """torchvision VGG-19; embedding = global average of the last conv block (512-d);
    spatial = relu4_4 maps (512 ch, 1/8 resolution)."""

    _RELU4_4 = 26  # index in vgg19.features of the relu after conv4_4

    def __init__(self, state_dict: dict[str, torch.Tensor] | None, name: str, input_size: int = 224):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        # Only the conv part is used (built without the 120M-parameter classifier): a full
        # torchvision state dict or one with just the ``features.*`` keys both load.
        self.net = nn.Module()
        self.net.features = make_layers(cfgs["E"], batch_norm=False)
        if state_dict is not None:
            convs = {k: v for k, v in state_dict.items() if k.startswith("features.")}
            _load_state(self.net, convs, name)
        self.net.eval()
        self.name, self.input_size, self.normalise = name, input_size, (IMAGENET_MEAN, IMAGENET_STD)

    def embed(self, x):
        return self.net.features(x).mean(dim=(2, 3))

    def embed_spatial(self, x):
        return self.net.features[: self._RELU4_4 + 1](x)


class SmallCNN(nn.Module):
    """A 4-block conv encoder (about 100k parameters): stand-in domain encoder and test network."""

    def __init__(self, in_chans: int = 1, width: int = 16, dim: int = 64, num_classes: int = 0):
        super().__init__()
        chans = [in_chans, width, width * 2, width * 4, width * 4]
        blocks = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(chans[-1], dim)
        self.head = nn.Linear(dim, num_classes) if num_classes else None
        self.config = {"in_chans": in_chans, "width": width, "dim": dim, "num_classes": num_classes}

    def forward_spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[:4](x)  # first block: full-detail maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.proj(self.blocks(x).mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z


class SmallCNNFeatures(FeatureNet):
    def __init__(self, model: SmallCNN, name: str, input_size: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.name, self.in_chans, self.input_size = name, model.config["in_chans"], input_size
        self.normalise = None

    def embed(self, x):
        return self.model.features(x)

    def embed_spatial(self, x):
        return self.model.forward_spatial(x)


class ClassifierFeatures(FeatureNet):
    """Wraps an oncosynth classifier: embedding = its ``.features(x)`` (pre-logit)."""

    def __init__(self, model: nn.Module, name: str, in_chans: int, input_size: int | None):
        super().__init__()
        self.model = model.eval()
        self.name, self.in_chans, self.input_size = name, in_chans, input_size
        self.normalise = None  # the classifier normalises its own input

    def embed(self, x):
        return self.model.features(x)

    def embed_spatial(self, x):
        for owner in (self.model, getattr(self.model, "backbone", None)):
            if owner is not None and hasattr(owner, "forward_intermediates"):
                # timm models: the first stage's maps
                return owner.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
        raise ConfigError(f"{self.name}: this classifier exposes no spatial feature maps")


# ----------------------------------------------------------------------- loading
def _load_state(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"{name}: weights do not fit the architecture ({' '.join(first)})") from None


def _torchvision_state(arch: str) -> dict[str, torch.Tensor]:
    from torchvision import models

    weights = {"inception": models.Inception_V3_Weights.IMAGENET1K_V1,
               "vgg19": models.VGG19_Weights.IMAGENET1K_V1}[arch]
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # offline, proxy, disk
        raise ConfigError(f"{arch}:download failed ({exc}); pass a local weights file instead, "
                          f"e.g. {arch}:/path/to/{arch}.pth") from None


def _pretrained(cls: type, arch: str, arg: str, input_size: int | None) -> FeatureNet:
    if not arg:
        raise ConfigError(f"feature net '{arch}:' needs a weights file or 'download'")
    if arg == "download":
        state, tag = _torchvision_state(arch), "imagenet-torchvision"
    else:
        state, tag = read_weights_file(arg), Path(arg).name
    name = f"{'inception-v3' if arch == 'inception' else 'vgg19'}[{tag}]"
    kwargs = {"input_size": input_size} if input_size else {}
    return cls(state, name, **kwargs)


SMALL_ENCODER_KIND = "feature-net/small-cnn"


def save_small_encoder(model: SmallCNN, folder: str | Path, manifest: dict | None = None,
                       extra: dict | None = None) -> Path:
    """Save a SmallCNN as a checkpoint that ``encoder:<folder>`` loads."""
    from oncosynth.checkpoint import save_checkpoint

    config = {"kind": SMALL_ENCODER_KIND, **model.config, **(extra or {})}
    return save_checkpoint(folder, model.state_dict(), config, manifest)


def _encoder(arg: str, device: torch.device, input_size: int | None) -> FeatureNet:
    from oncosynth.checkpoint import load_checkpoint

    if not arg:
        raise ConfigError("feature net 'encoder:' needs a checkpoint folder")
    folder = Path(arg)
    tensors, config, _ = load_checkpoint(folder, device="cpu")
    kind = str(config.get("kind", ""))
    name = f"encoder[{folder.name}]"
    if kind.startswith(SMALL_ENCODER_KIND):
        model = SmallCNN(**{k: config[k] for k in ("in_chans", "width", "dim", "num_classes")})
        _load_state(model, tensors, name)
        return SmallCNNFeatures(model, name, input_size or config.get("img_size"))
    if kind.startswith("classifier"):
        try:
            from oncosynth.classifiers import load_classifier
        except ImportError as exc:
            raise ConfigError(f"{folder}: classifier checkpoints need oncosynth.classifiers ({exc})") from None
        model = load_classifier(folder, device="cpu")
        in_chans = int(config.get("in_chans", getattr(model, "in_chans", 3)))
        return ClassifierFeatures(model, name, in_chans, input_size or config.get("img_size"))
    if kind.startswith("anomaly-detector"):
        from oncosynth.quality.anomaly import AnomalyEncoderFeatures

        return AnomalyEncoderFeatures.from_checkpoint(tensors, config, name, input_size)
    raise CheckpointError(f"{folder}: '{kind}' is not an encoder (expected a classifier, an anomaly detector "
                          f"or {SMALL_ENCODER_KIND})")


def _random_cnn(arg: str, device: torch.device, input_size: int | None) -> FeatureNet:
    seed = int(arg or 0)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = SmallCNN(in_chans=1, width=8, dim=32)
    for module in model.modules():  # He init keeps activations at unit scale through the blocks
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    torch.random.set_rng_state(generator_state)
    return SmallCNNFeatures(model, f"random-cnn[seed={seed}]", input_size)


FEATURE_NETS: dict[str, Callable[[str, torch.device, int | None], FeatureNet]] = {
    "inception": lambda arg, device, size: _pretrained(InceptionFeatures, "inception", arg, size),
    "vgg19": lambda arg, device, size: _pretrained(VGGFeatures, "vgg19", arg, size),
    "encoder": _encoder,
    "random-cnn": _random_cnn,
}


def create_feature_net(spec: str | FeatureNet, device: str | torch.device = "cpu",
                       input_size: int | None = None) -> FeatureNet:
    """Build a feature network from ``"<kind>:<argument>"`` (see module docstring).

    ``input_size`` overrides the network's input resolution (e.g. 75 px for a
    fast Inception in tests); it becomes part of ``.name`` when it differs
    from the default.
    """
    from oncosynth.runtime import resolve_device

    if isinstance(spec, FeatureNet):
        return spec
    kind, _, arg = str(spec).partition(":")
    if kind not in FEATURE_NETS:
        raise ConfigError(f"unknown feature net '{spec}'; use one of "
                          + ", ".join(f"{k}:..." for k in FEATURE_NETS))
    net = FEATURE_NETS[kind](arg, resolve_device(str(device)), input_size)
    if input_size is not None and kind in ("inception", "vgg19"):
        net.name += f"@{input_size}px"
    return net.to(resolve_device(str(device))).eval()


@torch.no_grad()
def extract_features(net: FeatureNet, images: torch.Tensor, batch_size: int = 64,
                     progress: bool = False) -> torch.Tensor:
    """Embed a (possibly large) CPU tensor batch by batch; returns N×D float64 on CPU."""
    out = []
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"features ({net.name})", unit="batch", leave=False)
    for start in starts:
        out.append(net(images[start : start + batch_size]).double().cpu())
    if not out:
        return torch.zeros(0, 0, dtype=torch.float64)
    return torch.cat(out)


# ------------------------------------------------------- intermediate layers ----
class _Enough(Exception):
    """Raised by a forward hook once every requested layer is captured: the rest of the net is skipped."""


class LayerFeatures(nn.Module):
    """Named intermediate maps of a feature network, for style transfer.

    Layers are named ``conv_1``, ``conv_2``, ... after the network's ``nn.Conv2d``
    modules in order (for VGG-19 that is the naming of the PyTorch style-transfer
    tutorial: ``conv_5`` is conv3_1). Each map is the convolution's output, before
    the activation. The network is frozen and in eval mode (no batch statistics),
    so the maps of one image never depend on the other images in the batch.
    ``forward(x, layers)`` returns ``{name: map}`` and stops the forward pass once
    the last requested layer has been computed.
    """

    def __init__(self, body: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], name: str,
                 in_chans: int, normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
        super().__init__()
        self.body = body.eval()
        self.body.requires_grad_(False)
        for module in self.body.modules():  # an in-place activation would overwrite a captured map
            if hasattr(module, "inplace"):
                module.inplace = False
        self._run = run
        self.name, self.in_chans, self.normalise = name, in_chans, normalise
        self._convs = {f"conv_{i + 1}": m for i, m in
                       enumerate(m for m in self.body.modules() if isinstance(m, nn.Conv2d))}

    @property
    def layer_names(self) -> list[str]:
        return list(self._convs)

    @property
    def device(self) -> torch.device:
        return next(self.body.parameters()).device

    def check_layers(self, layers: Iterable[str]) -> None:
        """ConfigError naming the layers this network lacks (call before any work starts)."""
        missing = [name for name in layers if name not in self._convs]
        if missing:
            names = self.layer_names
            shown = ", ".join(names[:8]) + (f", ... {names[-1]}" if len(names) > 8 else "")
            raise ConfigError(f"feature net {self.name} has no layer(s) {missing}; it has {len(names)} "
                              f"conv layers: {shown}")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = adapt_channels(x, self.in_chans, self.name)
        if self.normalise is not None:
            mean, std = (x.new_tensor(v).view(1, -1, 1, 1) for v in self.normalise)
            x = (x - mean) / std
        return x

    def forward(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        wanted = list(dict.fromkeys(layers))
        self.check_layers(wanted)
        out: dict[str, torch.Tensor] = {}

        def capture(name: str):
            def hook(module, inputs, output):
                out[name] = output
                if len(out) == len(wanted):
                    raise _Enough

            return hook

        handles = [self._convs[name].register_forward_hook(capture(name)) for name in wanted]
        try:
            self._run(self.prepare(x))
        except _Enough:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return out


def create_layer_features(spec: str | FeatureNet, device: str | torch.device = "cpu") -> LayerFeatures:
    """Per-layer feature extractor from the same specs as :func:`create_feature_net`.

    ``vgg19:<file|download>`` (VGG-19's conv part, ImageNet-normalised RGB input),
    ``encoder:<checkpoint>`` (a classifier, a small CNN or the anomaly detector's
    encoder) and ``random-cnn:<seed>``. The weights are loaded by
    ``create_feature_net``; this only picks the module to run and names its layers.
    """
    net = create_feature_net(spec, device=device)
    if isinstance(net, VGGFeatures):
        body, run = net.net.features, net.net.features
    elif isinstance(net, ClassifierFeatures):
        body, run = net.model, net.model.features
    elif isinstance(net, SmallCNNFeatures):
        body, run = net.model, net.model.blocks
    elif hasattr(net, "layer_body"):  # e.g. the anomaly detector's encoder
        body, run = net.layer_body()
    else:
        raise ConfigError(f"feature net {net.name} has no per-layer access (use vgg19:..., encoder:... "
                          f"or random-cnn:...)")
    return LayerFeatures(body, run, net.name, net.in_chans, net.normalise)
