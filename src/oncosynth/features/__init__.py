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

The package: ``base`` (FeatureNet, input adaptation), ``imagenet`` (Inception,
VGG), ``small`` (the small CNN, random-cnn), ``encoders`` (``encoder:`` and
the :func:`register_encoder` hook), ``factory`` and ``layers`` (per-layer maps).
"""

from oncosynth.features.base import IMAGENET_MEAN, IMAGENET_STD, FeatureNet, adapt_channels
from oncosynth.features.encoders import register_encoder, registered_encoders
from oncosynth.features.factory import FEATURE_NETS, create_feature_net, extract_features
from oncosynth.features.imagenet import InceptionFeatures, VGGFeatures
from oncosynth.features.layers import LayerFeatures, create_layer_features
from oncosynth.features.small import SMALL_ENCODER_KIND, SmallCNN, SmallCNNFeatures, save_small_encoder

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "FeatureNet", "adapt_channels", "register_encoder", "registered_encoders",
    "FEATURE_NETS", "create_feature_net", "extract_features", "InceptionFeatures", "VGGFeatures",
    "LayerFeatures", "create_layer_features", "SMALL_ENCODER_KIND", "SmallCNN", "SmallCNNFeatures",
    "save_small_encoder",
]
