"""Pretraining without natural-image weights: self-supervised (SimCLR, BYOL, DINO, MAE) or
supervised on procedural phantom images. The output loads as ``model.pretrained: RUN``."""

from oncosynth.pretrain.loop import KIND, PretrainConfig, initialisation_of, make_config, pretrain
from oncosynth.pretrain.methods import METHODS, create_method
from oncosynth.pretrain.views import ViewConfig, random_view

__all__ = ["KIND", "METHODS", "PretrainConfig", "ViewConfig", "create_method", "initialisation_of",
           "make_config", "pretrain", "random_view"]
