"""Study statistics: per-cell metrics, seed summaries, bootstrap intervals, paired differences.

Intervals resample the *test cases* (the same resampled index sets for every
arm, so differences are paired) and average the metric over seeds inside
each resample: the interval describes the seed-averaged number a reader
sees in the table. The p-value of a paired difference is the two-sided
bootstrap p: twice the smaller tail share of resampled differences at or
beyond zero.

The hierarchical versions (below) resample the seeds as well, so training
randomness enters the interval and p-value; Holm's adjustment controls the
family-wise error over the arms compared with one reference.
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
    low, high = interval(diff[~np.isnan(diff)])
    return {"delta_auroc": point, "delta_low": low, "delta_high": high, "p_value": two_sided_p(diff)}


# ------------------------------------------------ seeds as a random factor ----
# Seeds and test cases are crossed (every seed's classifier scores the same
# cases), so one hierarchical resample draws S seeds with replacement and one
# set of n cases, and averages the metric of the drawn seeds on those cases.
# Variation between seeds then widens the interval, which the case-only
# bootstrap above cannot show.

def seed_draws(n_seeds: int, resamples: int, seed: int = 1) -> np.ndarray:
    """resamples × n_seeds positions into the seed list, drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_seeds, size=(resamples, n_seeds))


def _per_seed_samples(labels: np.ndarray, probs_per_seed: list[np.ndarray], positive: int,
                      index: np.ndarray, metric: str) -> np.ndarray:
    """seeds × resamples matrix of the metric on each case resample."""
    fn = resampled_auroc if metric == "auroc" else resampled_auprc
    return np.stack([fn(labels, p, positive, index) for p in probs_per_seed])


def _hierarchical(per_seed: np.ndarray, seed_index: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds, resample by resample: per_seed is S×B, seed_index B×S."""
    columns = np.arange(per_seed.shape[1])[:, None]
    return np.nanmean(per_seed[seed_index, columns], axis=1)


def hierarchical_interval(labels: np.ndarray, probs_per_seed: list[np.ndarray], positive: int,
                          index: np.ndarray, seed_index: np.ndarray, metric: str = "auroc") -> tuple[float, float]:
    """95% interval of the seed-averaged AUROC/AUPRC, resampling seeds and then test cases."""
    return interval(_hierarchical(_per_seed_samples(labels, probs_per_seed, positive, index, metric), seed_index))


def two_sided_p(diff: np.ndarray) -> float:
    """Bootstrap p of 'no difference': twice the smaller share of resamples at or beyond zero."""
    diff = diff[~np.isnan(diff)]
    if len(diff) == 0:
        return float("nan")
    return float(min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))))


def hierarchical_difference(labels: np.ndarray, arm_probs: list[np.ndarray], reference_probs: list[np.ndarray],
                            positive: int, index: np.ndarray, seed_index: np.ndarray) -> dict[str, float]:
    """Paired ΔAUROC with seeds as a random factor: seed s of the arm is paired with seed s of the
    reference (same data fraction, same initialisation seed), both on the same resampled cases."""
    arm = _per_seed_samples(labels, arm_probs, positive, index, "auroc")
    ref = _per_seed_samples(labels, reference_probs, positive, index, "auroc")
    diff = _hierarchical(arm - ref, seed_index)
    low, high = interval(diff[~np.isnan(diff)])
    return {"delta_low_hier": low, "delta_high_hier": high, "p_hier": two_sided_p(diff)}


def per_seed_delta(labels: np.ndarray, arm_by_seed: dict[int, np.ndarray], reference_by_seed: dict[int, np.ndarray],
                   positive: int) -> dict[str, float]:
    """ΔAUROC of each seed the two arms share, keyed by the seed (as text, for JSON)."""
    return {str(s): headline_auroc(labels, arm_by_seed[s], positive) - headline_auroc(labels, reference_by_seed[s], positive)
            for s in sorted(set(arm_by_seed) & set(reference_by_seed))}


def paired_comparison(labels: np.ndarray, arm_by_seed: dict[int, np.ndarray], reference_by_seed: dict[int, np.ndarray],
                      positive: int, index: np.ndarray, resamples: int) -> dict:
    """Everything a row says of arm against reference on their common seeds: the case-only and the
    hierarchical ΔAUROC intervals with p-values, and the Δ of each seed."""
    common = sorted(set(arm_by_seed) & set(reference_by_seed))
    arm, ref = [arm_by_seed[s] for s in common], [reference_by_seed[s] for s in common]
    row = paired_difference(labels, arm, ref, positive, index)
    row.update(hierarchical_difference(labels, arm, ref, positive, index, seed_draws(len(common), resamples, seed=1)))
    row["per_seed_delta"] = per_seed_delta(labels, arm_by_seed, reference_by_seed, positive)
    return row


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None/NaN entries are left out and kept)."""
    present = [i for i, p in enumerate(p_values) if p is not None and not np.isnan(p)]
    adjusted: list[float | None] = list(p_values)
    running = 0.0
    m = len(present)
    for rank, i in enumerate(sorted(present, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted
