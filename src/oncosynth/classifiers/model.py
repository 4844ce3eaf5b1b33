"""Image classifiers: any timm backbone plus a small head, with named classes.

``Classifier`` takes images in [0, 1] (N×C×H×W) and normalises them itself,
so every caller (training, the study, the metrics' "domain encoder") feeds
the same thing. Per-image normalisation and flip TTA (``set_input_handling``,
set by training from its config) are part of the model and its checkpoint. ``features(x)`` is the pooled pre-logit embedding.

Pretrained weights come either from timm's hub (``pretrained="timm"``, needs
the network) or from a local file (``.safetensors`` or a PyTorch state dict,
read with ``weights_only=True``): the first convolution is adapted to the
input channels and the old classifier is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from oncosynth.checkpoint import load_checkpoint, read_weights_file, save_checkpoint
from oncosynth.classifiers.normalise import NORMS, normalise_input
from oncosynth.errors import CheckpointError, ConfigError

KIND = "classifier"
HEADS = ("linear", "mlp")
# Folders whose backbone weights a classifier can start from: a trained classifier, or
# the output of `oncosynth pretrain`.
PRETRAINED_KINDS = (KIND, "pretrained-backbone")


def _create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """timm model without classifier; ``img_size`` is passed only to models that take it (Swin, ViT)."""
    if name not in timm.list_models():
        raise ConfigError(f"unknown timm backbone '{name}' (see timm.list_models())")
    img_size = kwargs.pop("img_size", None)
    if img_size is not None:
        try:
            return timm.create_model(name, pretrained=False, img_size=img_size, **kwargs)
        except TypeError:  # convolutional nets take any size and have no img_size argument
            pass
    return timm.create_model(name, pretrained=False, **kwargs)


class _Copy(nn.Module):
    """Returns a copy, so later in-place edits never touch a hooked layer's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class Classifier(nn.Module):
    """timm backbone (no classifier) -> head; input images in [0, 1]."""

    def __init__(self, backbone: str = "resnet18", in_chans: int = 1, num_classes: int = 2,
                 img_size: int | None = None, head: str = "linear", classes: list[str] | None = None,
                 freeze_backbone: bool = False, drop_rate: float = 0.0):
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}, got '{head}'")
        classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        if len(classes) != num_classes:
            raise ConfigError(f"{len(classes)} class names for {num_classes} classes")
        self.backbone = _create_backbone(backbone, in_chans=in_chans, num_classes=0,
                                         drop_rate=drop_rate, img_size=img_size)
        width = self.backbone.num_features
        if head == "linear":
            self.head = nn.Linear(width, num_classes)
        else:  # the MCGAN paper's protocol: in -> in/2 -> LeakyReLU -> classes
            self.head = nn.Sequential(nn.Linear(width, width // 2), nn.LeakyReLU(), nn.Linear(width // 2, num_classes))
        mean = torch.tensor(self.backbone.pretrained_cfg.get("mean", (0.5, 0.5, 0.5)), dtype=torch.float32)
        std = torch.tensor(self.backbone.pretrained_cfg.get("std", (0.25, 0.25, 0.25)), dtype=torch.float32)
        if in_chans != len(mean):  # grey input: the average statistics of the colour channels
            mean, std = mean.mean().repeat(in_chans), std.mean().repeat(in_chans)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        self.classes = classes
        self.config = {"backbone": backbone, "in_chans": in_chans, "num_classes": num_classes,
                       "img_size": img_size, "head": head, "classes": classes,
                       "freeze_backbone": freeze_backbone, "drop_rate": drop_rate}
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.set_input_handling()

    def set_input_handling(self, norm: str = "none", percentiles: tuple[float, float] = (1.0, 99.0),
                           tta: bool = False) -> "Classifier":
        """Per-image normalisation and flip TTA (see ``classifiers.normalise``); recorded in the config."""
        if norm not in NORMS:
            raise ConfigError(f"input normalisation must be one of {NORMS}, got '{norm}'")
        self.input_norm, self.percentiles, self.tta = norm, (float(percentiles[0]), float(percentiles[1])), bool(tta)
        self.config.update({"input_norm": norm, "input_percentiles": list(self.percentiles), "tta": self.tta})
        return self

    @property
    def width(self) -> int:
        return self.backbone.num_features

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.freeze_backbone:  # a frozen backbone keeps its normalisation statistics
            self.backbone.eval()
        return self

    def prepare_for_dp(self) -> "Classifier":
        """Make the backbone work with opacus' per-sample gradient hooks.

        BatchNorm mixes samples, so it becomes GroupNorm. opacus hooks every
        layer with weights and forbids in-place edits of such a layer's output,
        which timm does (in-place activations, ``x += shortcut`` after the last
        norm of a residual block): activations are made out-of-place and each
        norm's output is copied. The layout is recorded so ``load_classifier``
        rebuilds it.
        """
        from opacus.validators import ModuleValidator

        if self.config.get("dp_layout"):
            return self
        self.backbone = ModuleValidator.fix(self.backbone)
        for module in self.backbone.modules():
            if hasattr(module, "inplace"):
                module.inplace = False
        for module in list(self.backbone.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.GroupNorm):
                    setattr(module, name, nn.Sequential(child, _Copy()))
        self.config["dp_layout"] = True
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W in [0, 1] -> N×D pooled pre-logit embedding."""
        return self.backbone(normalise_input(x, self.input_norm, self.mean, self.std, self.percentiles))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ------------------------------------------------------------- weights ----
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from one of our classifier checkpoints (a folder) or a weights file."""
    path = Path(path)
    if path.is_dir():
        tensors, config, _ = load_checkpoint(path)
        if config.get("kind") not in PRETRAINED_KINDS:
            raise CheckpointError(f"{path}: checkpoint holds a '{config.get('kind') or 'unknown'}', "
                                  f"expected one of {', '.join(PRETRAINED_KINDS)}")
        return tensors
    if not path.is_file():
        raise ConfigError(f"pretrained weights not found: {path}")
    return read_weights_file(path)


def load_backbone_weights(model: Classifier, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy matching tensors into ``model.backbone``; adapt the stem to the channel count.

    Returns the keys that were missing / skipped so callers can report them.
    """
    from timm.models._manipulate import adapt_input_conv

    # Our own checkpoints prefix everything with "backbone."; timm files do not.
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    target = model.backbone.state_dict()
    first_conv = model.backbone.pretrained_cfg.get("first_conv")
    loaded, skipped = {}, []
    for key, value in state.items():
        if key not in target:
            skipped.append(key)
            continue
        if first_conv and key == f"{first_conv}.weight" and value.shape[1] != target[key].shape[1]:
            value = adapt_input_conv(target[key].shape[1], value)
        if value.shape != target[key].shape:
            skipped.append(key)
            continue
        loaded[key] = value
    if not loaded:
        raise CheckpointError("pretrained weights share no tensor with backbone "
                              f"'{model.config['backbone']}' (wrong architecture?)")
    missing = [k for k in target if k not in loaded]
    model.backbone.load_state_dict(loaded, strict=False)
    return {"missing": missing, "skipped": skipped}


# ------------------------------------------------------------- factory ----
def create_classifier(backbone: str = "resnet18", in_chans: int = 1, num_classes: int = 2,
                      img_size: int | None = None, pretrained: str | Path | None = None,
                      freeze_backbone: bool = False, head: str | None = None,
                      classes: list[str] | None = None, drop_rate: float = 0.0) -> Classifier:
    """Build a classifier. ``pretrained``: None, "timm" (hub download) or a weights file/folder.

    A frozen backbone gets the MLP head by default (the MCGAN protocol), a
    trainable one a linear head.
    """
    head = head or ("mlp" if freeze_backbone else "linear")
    model = Classifier(backbone, in_chans, num_classes, img_size, head, classes, freeze_backbone, drop_rate)
    if pretrained is None:
        return model
    if str(pretrained) == "timm":
        try:
            source = timm.create_model(backbone, pretrained=True, num_classes=0)
        except Exception as exc:  # noqa: BLE001 - offline, unknown weights, ...
            raise ConfigError(f"could not download timm weights for '{backbone}': {exc}") from None
        state = source.state_dict()
    else:
        state = read_state_dict(pretrained)
    load_backbone_weights(model, state)
    model.config["pretrained"] = str(pretrained)
    return model


def save_classifier(model: Classifier, folder: str | Path, config: dict[str, Any] | None = None,
                    manifest: dict[str, Any] | None = None) -> Path:
    """Weights as safetensors; the config records how to rebuild the model (kind "classifier")."""
    full = {"kind": KIND, **model.config, **(config or {})}
    full["kind"] = KIND
    return save_checkpoint(folder, model.state_dict(), full, manifest)


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> Classifier:
    tensors, config, _ = load_checkpoint(folder, kind=KIND, device="cpu")
    model = Classifier(config["backbone"], config["in_chans"], config["num_classes"], config.get("img_size"),
                       config.get("head", "linear"), config.get("classes"),
                       config.get("freeze_backbone", False), config.get("drop_rate", 0.0))
    if config.get("dp_layout"):
        model.prepare_for_dp()
    model.set_input_handling(config.get("input_norm", "none"), config.get("input_percentiles", (1.0, 99.0)),
                             config.get("tta", False))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder}: weights do not fit the recorded architecture ({exc})") from None
    return model.to(device).eval()
