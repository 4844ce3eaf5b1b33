"""Fidelity, diversity and privacy metrics for synthetic images (see ``evaluate``)."""

from oncosynth.metrics.diversity import mean_pairwise_ms_ssim, ms_ssim
from oncosynth.metrics.fidelity import fid, frechet_distance, kid, mmd2_unbiased, prdc
from oncosynth.metrics.memorisation import DEFAULT_THRESHOLD

__all__ = ["evaluate", "fid", "frechet_distance", "kid", "mmd2_unbiased", "prdc", "ms_ssim",
           "mean_pairwise_ms_ssim", "DEFAULT_THRESHOLD", "frd"]


def __getattr__(name):  # heavy parts (data layer, radiomics) load on first use
    if name == "evaluate":
        from oncosynth.metrics.evaluate import evaluate

        return evaluate
    if name == "frd":
        from oncosynth.metrics.frd import frd

        return frd
    raise AttributeError(name)
