"""Named intermediate layers of a feature network (``conv_1``, ``conv_2``, ...), for style transfer."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn

from oncosynth.errors import ConfigError
from oncosynth.features.base import FeatureNet, adapt_channels
from oncosynth.features.factory import create_feature_net


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
    ``create_feature_net``; this only asks the network for its ``layer_body()``.
    """
    net = create_feature_net(spec, device=device)
    if not hasattr(net, "layer_body"):
        raise ConfigError(f"feature net {net.name} has no per-layer access (use vgg19:..., encoder:... "
                          f"or random-cnn:...)")
    body, run = net.layer_body()
    return LayerFeatures(body, run, net.name, net.in_chans, net.normalise)
