"""Classification scores, vectorised so bootstrap resamples are cheap.

``auroc`` is the Mann-Whitney statistic (ties count one half) computed on
rows of a 2-D array at once; ``auprc`` is average precision (step-wise, as
scikit-learn computes it). Threshold metrics treat one class as positive.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auroc(y: np.ndarray, score: np.ndarray) -> np.ndarray | float:
    """AUROC of binary labels ``y`` (1 = positive) for ``score``; both 1-D, or 2-D row-wise (resamples)."""
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    single = y.ndim == 1
    y, score = np.atleast_2d(y), np.atleast_2d(score)
    ranks = rankdata(score, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        result = ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    result = np.where((n_pos == 0) | (n_neg == 0), np.nan, result)
    return float(result[0]) if single else result


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over thresholds of (recall step) × precision."""
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    # group tied scores: only the last index of each distinct score is a threshold
    last = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def macro_auroc(labels: np.ndarray, probs: np.ndarray) -> tuple[float, list[float]]:
    """One-vs-rest AUROC per class and their mean (classes absent from ``labels`` are skipped)."""
    per_class = [auroc((labels == k).astype(np.int64), probs[:, k]) for k in range(probs.shape[1])]
    present = [a for a in per_class if not np.isnan(a)]
    return (float(np.mean(present)) if present else float("nan")), per_class


def selection_score(labels: np.ndarray, probs: np.ndarray, positive: int, metric: str = "auroc") -> float:
    """The validation number used to pick the best epoch: binary AUROC/AUPRC, or macro AUROC for >2 classes."""
    if probs.shape[1] > 2 and metric == "auroc":
        return macro_auroc(labels, probs)[0]
    y = (labels == positive).astype(np.int64)
    return auroc(y, probs[:, positive]) if metric == "auroc" else auprc(y, probs[:, positive])


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold maximising sensitivity + specificity - 1 (predict positive when score >= t)."""
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    candidates = np.unique(score)[::-1]  # descending: ties go to the highest (most specific) threshold
    if len(candidates) == 1 or y.sum() in (0, len(y)):
        return 0.5
    positive = score[None, :] >= candidates[:, None]
    sensitivity = (positive & (y == 1)).sum(1) / max(1, (y == 1).sum())
    specificity = (~positive & (y == 0)).sum(1) / max(1, (y == 0).sum())
    return float(candidates[np.argmax(sensitivity + specificity)])


def threshold_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, balanced accuracy, sensitivity, specificity and F1 when predicting positive at score >= threshold."""
    y = np.asarray(y).astype(bool)
    predicted = np.asarray(score) >= threshold
    tp, tn = int((predicted & y).sum()), int((~predicted & ~y).sum())
    fp, fn = int((predicted & ~y).sum()), int((~predicted & y).sum())
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * sensitivity / (precision + sensitivity) if precision + sensitivity > 0 else 0.0
    return {"accuracy": (tp + tn) / len(y), "balanced_accuracy": (sensitivity + specificity) / 2,
            "sensitivity": sensitivity, "specificity": specificity, "f1": f1}
