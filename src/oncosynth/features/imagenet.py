"""Natural-image feature networks: torchvision's Inception-v3 and VGG-19 (ImageNet weights).

``inception:<weights file>|download`` and ``vgg19:<weights file>|download``.
torchvision's ImageNet weights are not the TensorFlow weights that published
FID numbers use, so our FIDs are comparable only with each other.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from oncosynth.checkpoint import read_weights_file
from oncosynth.errors import ConfigError
from oncosynth.features.base import IMAGENET_MEAN, IMAGENET_STD, FeatureNet, load_state


class InceptionFeatures(FeatureNet):
    """torchvision Inception-v3; pool3 (2048-d) embedding; spatial = after the first max-pool (64 ch)."""

    def __init__(self, state_dict: dict[str, torch.Tensor] | None, name: str, input_size: int = 299):
        super().__init__()
        from torchvision.models import inception_v3

        # transform_input=True matches torchvision's ImageNet weights (ImageNet-normalised input).
        self.net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        if state_dict is not None:
            load_state(self.net, state_dict, name)
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
            load_state(self.net, convs, name)
        self.net.eval()
        self.name, self.input_size, self.normalise = name, input_size, (IMAGENET_MEAN, IMAGENET_STD)

    def embed(self, x):
        return self.net.features(x).mean(dim=(2, 3))

    def embed_spatial(self, x):
        return self.net.features[: self._RELU4_4 + 1](x)

    def layer_body(self):
        return self.net.features, self.net.features


def _torchvision_state(arch: str) -> dict[str, torch.Tensor]:
    from torchvision import models

    weights = {"inception": models.Inception_V3_Weights.IMAGENET1K_V1,
               "vgg19": models.VGG19_Weights.IMAGENET1K_V1}[arch]
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # offline, proxy, disk
        raise ConfigError(f"{arch}:download failed ({exc}); pass a local weights file instead, "
                          f"e.g. {arch}:/path/to/{arch}.pth") from None


def pretrained(arch: str, arg: str, input_size: int | None) -> FeatureNet:
    """``inception`` or ``vgg19`` from a weights file or ``download``."""
    if not arg:
        raise ConfigError(f"feature net '{arch}:' needs a weights file or 'download'")
    if arg == "download":
        state, tag = _torchvision_state(arch), "imagenet-torchvision"
    else:
        state, tag = read_weights_file(arg), Path(arg).name
    name = f"{'inception-v3' if arch == 'inception' else 'vgg19'}[{tag}]"
    cls = InceptionFeatures if arch == "inception" else VGGFeatures
    kwargs = {"input_size": input_size} if input_size else {}
    return cls(state, name, **kwargs)
