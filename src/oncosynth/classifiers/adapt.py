"""BatchNorm statistics re-estimated on unlabelled images of a new site (AdaBN, Li et al. 2016).

A classifier's BatchNorm layers normalise with the mean and variance of its training
images. Another hospital's scanner shifts those statistics (BCDR's patches have more
contrast and sharper detail than CBIS-DDSM's), so every layer sees inputs off the scale it
learned. AdaBN keeps every weight and replaces only the running statistics with those of
the new site's images. It needs their pixels, never their labels.

Scored on the same images it adapted to, this is transductive. ``cross_fitted_proba``
avoids that: the images are split into folds by patient, and each fold is scored by a
copy adapted on the *other* folds only, as a hospital would adapt on last year's
unlabelled patients and score this year's.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from oncosynth.classifiers.train import predict_proba, to_float
from oncosynth.errors import ConfigError


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                    batch_size: int = 256) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are those of ``images`` (uint8 or [0, 1]).

    The statistics are the plain average over batches (momentum None), so the order of the
    images does not matter; large batches keep the per-batch variances close to the set's.
    The model itself is left untouched.
    """
    if len(images) == 0:
        raise ConfigError("BatchNorm adaptation needs at least one image of the new site")
    adapted = copy.deepcopy(model).to(device)
    layers = _batchnorms(adapted)
    if not layers:
        raise ConfigError("the classifier has no BatchNorm layer to adapt (a DP-SGD classifier uses GroupNorm)")
    adapted.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            adapted(to_float(images[start : start + batch_size], device))
    return adapted.eval()


def patient_folds(patients: Sequence[str], folds: int = 2, seed: int = 0) -> np.ndarray:
    """Fold index per image; every image of a patient lands in the same fold."""
    unique = sorted(set(patients))
    if len(unique) < folds:
        raise ConfigError(f"cross-fitted adaptation needs at least {folds} patients, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: rank % folds for rank, i in enumerate(order)}
    return np.array([fold_of[p] for p in patients])


def cross_fitted_proba(model: nn.Module, images: torch.Tensor, patients: Sequence[str], folds: int = 2,
                       seed: int = 0, device: torch.device | str = "cpu", batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N×K) where each patient's images are scored by a copy of ``model``
    adapted on the other folds' patients only."""
    if len(patients) != len(images):
        raise ConfigError(f"{len(patients)} patient ids for {len(images)} images")
    fold = patient_folds(patients, folds, seed)
    probs: np.ndarray | None = None
    for k in range(folds):
        scored, adapt_on = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        adapted = adapt_batchnorm(model, images[torch.from_numpy(adapt_on)], device, batch_size)
        part = predict_proba(adapted, images[torch.from_numpy(scored)], device, batch_size)
        if probs is None:
            probs = np.zeros((len(images), part.shape[1]), dtype=part.dtype)
        probs[scored] = part
    return probs
