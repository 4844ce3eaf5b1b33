"""Batched FRD v1 radiomics: PyRadiomics' features for whole batches of 2-D images, in torch.

``extract(images)`` returns the 398 features ``frd-score`` (v1) gets from
PyRadiomics 3.0.1 for each image, in the same order (``feature_names()``),
on CPU or CUDA. See ``extractor`` for the settings and what is computed.
"""

from oncosynth.metrics.radiomics.extractor import extract, feature_names

__all__ = ["extract", "feature_names"]
