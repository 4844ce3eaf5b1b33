"""One factory for every feature network: ``create_feature_net("<kind>:<argument>")``."""

from __future__ import annotations

from typing import Callable

import torch

from oncosynth.errors import ConfigError
from oncosynth.features.base import FeatureNet
from oncosynth.features.encoders import load_encoder
from oncosynth.features.imagenet import pretrained
from oncosynth.features.small import random_cnn
from oncosynth.runtime.devices import resolve_device

#: kind -> builder(argument, input_size)
FEATURE_NETS: dict[str, Callable[[str, int | None], FeatureNet]] = {
    "inception": lambda arg, size: pretrained("inception", arg, size),
    "vgg19": lambda arg, size: pretrained("vgg19", arg, size),
    "encoder": load_encoder,
    "random-cnn": random_cnn,
}


def create_feature_net(spec: str | FeatureNet, device: str | torch.device = "cpu",
                       input_size: int | None = None) -> FeatureNet:
    """Build a feature network from ``"<kind>:<argument>"`` (see :mod:`oncosynth.features`).

    ``input_size`` overrides the network's input resolution (e.g. 75 px for a
    fast Inception in tests); it becomes part of ``.name`` when it differs
    from the default.
    """
    if isinstance(spec, FeatureNet):
        return spec
    kind, _, arg = str(spec).partition(":")
    if kind not in FEATURE_NETS:
        raise ConfigError(f"unknown feature net '{spec}'; use one of "
                          + ", ".join(f"{k}:..." for k in FEATURE_NETS))
    device = resolve_device(device)
    net = FEATURE_NETS[kind](arg, input_size)
    if input_size is not None and kind in ("inception", "vgg19"):
        net.name += f"@{input_size}px"
    return net.to(device).eval()


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
