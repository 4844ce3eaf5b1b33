"""Study statistics: per-cell metrics, seed summaries, bootstrap intervals, paired differences.

Intervals resample the *test cases* (the same resampled index sets for every
arm, so differences are paired) and average the metric over seeds inside
each resample: the interval describes the seed-averaged number a reader
sees in the table. The p-value of a paired difference is the two-sided
bootstrap p: twice the smaller tail share of resampled differences at or
beyond zero.
"""

from __future__ import annotations

import numpy as np

from oncosynth.classifiers.scores import auprc, auroc, macro_auroc, threshold_metrics

THRESHOLD_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")


def headline_auroc(labels: np.ndarray, probs: np.ndarray, positive: int) -> float:
    """Binary AUROC of the positive class, or macro one-vs-rest AUROC with more than two classes."""
    if probs.shape[1] > 2:
        return macro_auroc(labels, probs)[0]
    return auroc((labels == positive).astype(np.int64), probs[:, positive])


def cell_metrics(labels: np.ndarray, probs: np.ndarray, positive: int, threshold: float,
                 classes: list[str]) -> dict[str, float]:
    """Every number reported for one cell on one test set."""
    y = (labels == positive).astype(np.int64)
    score = probs[:, positive]
    metrics = {"auroc": headline_auroc(labels, probs, positive), "auprc": auprc(y, score)}
    metrics.update(threshold_metrics(y, score, threshold))
    macro, per_class = macro_auroc(labels, probs)
    if len(classes) > 2:
        metrics["macro_auroc"] = macro
        metrics["accuracy_argmax"] = float((probs.argmax(1) == labels).mean())
    for name, value in zip(classes, per_class):
        metrics[f"auroc_{name}"] = value
    return metrics


def summarise_seeds(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    array = np.asarray(values, dtype=np.float64)
    return float(np.mean(array)), float(np.std(array, ddof=1)) if len(array) > 1 else 0.0


def bootstrap_indices(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """resamples × n test-case indices drawn with replacement (fixed seed: shared by all arms)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resampled_auroc(labels: np.ndarray, probs: np.ndarray, positive: int, index: np.ndarray) -> np.ndarray:
    """The headline AUROC on every resample (rows of ``index``)."""
    if probs.shape[1] > 2:
        per_class = [auroc((labels[index] == k).astype(np.int64), probs[:, k][index]) for k in range(probs.shape[1])]
        return np.nanmean(np.stack(per_class), axis=0)
    return auroc((labels[index] == positive).astype(np.int64), probs[:, positive][index])


def resampled_auprc(labels: np.ndarray, probs: np.ndarray, positive: int, index: np.ndarray) -> np.ndarray:
    y, score = (labels == positive).astype(np.int64), probs[:, positive]
    return np.array([auprc(y[row], score[row]) for row in index])


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def seed_mean_interval(labels: np.ndarray, probs_per_seed: list[np.ndarray], positive: int,
                       index: np.ndarray, metric: str = "auroc") -> tuple[float, float]:
    """95% interval of the seed-averaged AUROC/AUPRC over test-case resamples."""
    fn = resampled_auroc if metric == "auroc" else resampled_auprc
    samples = np.mean([fn(labels, p, positive, index) for p in probs_per_seed], axis=0)
    return interval(samples)


def paired_difference(labels: np.ndarray, arm_probs: list[np.ndarray], reference_probs: list[np.ndarray],
                      positive: int, index: np.ndarray) -> dict[str, float]:
    """Seed-averaged AUROC(arm) - AUROC(reference) on the same test cases, with interval and p-value."""
    point = float(np.mean([headline_auroc(labels, p, positive) for p in arm_probs])
                  - np.mean([headline_auroc(labels, p, positive) for p in reference_probs]))
    arm = np.mean([resampled_auroc(labels, p, positive, index) for p in arm_probs], axis=0)
    ref = np.mean([resampled_auroc(labels, p, positive, index) for p in reference_probs], axis=0)
    diff = arm - ref
    diff = diff[~np.isnan(diff)]
    low, high = interval(diff)
    p_value = min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0)))
    return {"delta_auroc": point, "delta_low": low, "delta_high": high, "p_value": float(p_value)}
