"""Shared set-ups of the resume tests: an interrupted SinGAN and a classifier that always starts from the same weights."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from oncosynth.classifiers import create_classifier
from oncosynth.generators.singan import train as singan_train
from oncosynth.generators.singan import train_singan


def interrupt_singan_at_scale(monkeypatch, image: torch.Tensor, config: dict, state_dir, scale: int = 2,
                              seed: int = 3) -> None:
    """Train ``image`` with progress in ``state_dir`` and stop it (KeyboardInterrupt) when ``scale`` starts."""
    real_train_scale = singan_train._train_scale

    def killed(member, critic, k, *args):
        if k == scale:
            raise KeyboardInterrupt("killed")
        return real_train_scale(member, critic, k, *args)

    monkeypatch.setattr(singan_train, "_train_scale", killed)
    with pytest.raises(KeyboardInterrupt):
        train_singan(image, config, seed=seed, state_dir=state_dir)
    monkeypatch.setattr(singan_train, "_train_scale", real_train_scale)


def same_start_resnet10t(size: int = 16) -> Callable[[], torch.nn.Module]:
    """A factory of 1-channel, 2-class resnet10t models that all start from one set of weights (seed 0)."""
    torch.manual_seed(0)
    initial = create_classifier("resnet10t", 1, 2, size, classes=["a", "b"]).state_dict()

    def fresh() -> torch.nn.Module:
        model = create_classifier("resnet10t", 1, 2, size, classes=["a", "b"])
        model.load_state_dict(initial)
        return model

    return fresh
