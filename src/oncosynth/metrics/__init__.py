"""Fidelity, diversity and privacy metrics for synthetic images (see ``evaluate``).

``oncosynth.metrics.frd`` is the radiomics module (its ``frd`` function computes the distance).
"""

from oncosynth.metrics.diversity import mean_pairwise_ms_ssim, ms_ssim
from oncosynth.metrics.evaluate import evaluate
from oncosynth.metrics.fidelity import fid, frechet_distance, kid, mmd2_unbiased, prdc
from oncosynth.metrics.memorisation import DEFAULT_THRESHOLD

__all__ = ["evaluate", "fid", "frechet_distance", "kid", "mmd2_unbiased", "prdc", "ms_ssim",
           "mean_pairwise_ms_ssim", "DEFAULT_THRESHOLD"]
