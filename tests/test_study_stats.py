"""Hierarchical bootstrap, per-seed deltas and Holm, checked against plain loops and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from oncosynth.study import stats


def _predictions(n=120, seeds=3, spread=0.0, quality=1.0, rng_seed=0):
    """Labels and one probability matrix per seed; ``spread`` makes the seeds differ in quality."""
    rng = np.random.default_rng(rng_seed)
    labels = rng.integers(0, 2, n)
    probs = []
    for s in range(seeds):
        signal = quality + spread * (s - (seeds - 1) / 2)
        logit = signal * (2 * labels - 1) + rng.normal(0, 1.0, n)
        p = 1 / (1 + np.exp(-logit))
        probs.append(np.stack([1 - p, p], axis=1))
    return labels, probs


def test_hierarchical_interval_matches_a_plain_loop():
    labels, probs = _predictions(n=60, seeds=3, spread=0.8)
    cases = stats.bootstrap_indices(len(labels), 200, seed=0)
    seeds = stats.seed_draws(3, 200, seed=1)
    low, high = stats.hierarchical_interval(labels, probs, 1, cases, seeds)
    samples = []
    for b in range(200):
        rows = cases[b]
        samples.append(np.mean([roc_auc_score(labels[rows], probs[s][rows, 1]) for s in seeds[b]]))
    expected = np.percentile(samples, [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)


def test_hierarchical_difference_matches_a_plain_loop():
    labels, arm = _predictions(n=60, seeds=3, spread=0.6, quality=1.3, rng_seed=1)
    _, ref = _predictions(n=60, seeds=3, spread=0.6, quality=1.0, rng_seed=2)
    cases = stats.bootstrap_indices(len(labels), 120, seed=0)
    seeds = stats.seed_draws(3, 120, seed=1)
    got = stats.hierarchical_difference(labels, arm, ref, 1, cases, seeds)
    diffs = []
    for b in range(120):
        rows = cases[b]
        diffs.append(np.mean([roc_auc_score(labels[rows], arm[s][rows, 1]) - roc_auc_score(labels[rows], ref[s][rows, 1])
                              for s in seeds[b]]))
    diffs = np.array(diffs)
    assert got["delta_low_hier"] == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert got["delta_high_hier"] == pytest.approx(np.percentile(diffs, 97.5), abs=1e-12)
    assert got["p_hier"] == pytest.approx(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))


def test_hierarchical_interval_is_wider_when_seeds_differ():
    labels, probs = _predictions(n=200, seeds=3, spread=1.0)
    cases = stats.bootstrap_indices(len(labels), 1000, seed=0)
    seeds = stats.seed_draws(3, 1000, seed=1)
    case_low, case_high = stats.seed_mean_interval(labels, probs, 1, cases)
    hier_low, hier_high = stats.hierarchical_interval(labels, probs, 1, cases, seeds)
    assert hier_high - hier_low >= case_high - case_low
    assert hier_high - hier_low > 1.2 * (case_high - case_low)  # the seed spread is large here
    # and for the paired difference against a reference whose seeds agree
    _, ref = _predictions(n=200, seeds=3, spread=0.0, rng_seed=5)
    case = stats.paired_difference(labels, probs, ref, 1, cases)
    hier = stats.hierarchical_difference(labels, probs, ref, 1, cases, seeds)
    assert hier["delta_high_hier"] - hier["delta_low_hier"] >= case["delta_high"] - case["delta_low"]


def test_one_seed_gives_the_case_only_interval():
    labels, probs = _predictions(n=80, seeds=1)
    cases = stats.bootstrap_indices(len(labels), 300, seed=0)
    seeds = stats.seed_draws(1, 300, seed=1)
    assert stats.hierarchical_interval(labels, probs, 1, cases, seeds, "auprc") == pytest.approx(
        stats.seed_mean_interval(labels, probs, 1, cases, "auprc"))


def test_per_seed_delta_pairs_by_seed():
    labels, arm = _predictions(n=50, seeds=2, rng_seed=3)
    _, ref = _predictions(n=50, seeds=3, rng_seed=4)
    got = stats.per_seed_delta(labels, {0: arm[0], 7: arm[1]}, {0: ref[0], 7: ref[1], 9: ref[2]}, 1)
    assert list(got) == ["0", "7"]
    assert got["7"] == pytest.approx(roc_auc_score(labels, arm[1][:, 1]) - roc_auc_score(labels, ref[1][:, 1]))


def test_holm_matches_the_textbook_definition():
    # worked example: m = 4, sorted p 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06, 0.5
    assert stats.holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    rng = np.random.default_rng(0)
    p = list(rng.uniform(0, 0.2, 7))
    order = np.argsort(p)
    expected = np.empty(7)
    for rank, i in enumerate(order):
        expected[i] = min(1.0, max((7 - j) * p[order[j]] for j in range(rank + 1)))
    assert stats.holm(p) == pytest.approx(list(expected))
    assert stats.holm([None, 0.2, float("nan"), 0.3]) [1] == pytest.approx(0.4)
    assert stats.holm([None])[0] is None
