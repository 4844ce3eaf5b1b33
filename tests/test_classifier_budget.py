"""Step budgets: equal optimiser steps whatever the data size, the real/synthetic mix, resume, DP."""

from __future__ import annotations

import pytest
import torch

from oncosynth.classifiers import DPConfig, TrainConfig, create_classifier, train_classifier
from oncosynth.classifiers.sampling import BatchPlan, IndexStream
from oncosynth.errors import ConfigError
from toy_data import squares

CLASSES = ["benign", "malignant"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    torch.manual_seed(0)
    return create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)


def test_index_stream_walks_whole_passes_across_calls():
    stream, g = IndexStream(5, offset=10), torch.Generator().manual_seed(0)
    drawn = torch.cat([stream.take(3, g), stream.take(2, g)])
    assert sorted(drawn.tolist()) == [10, 11, 12, 13, 14]  # one full pass, split over two calls
    assert len(stream.take(7, g)) == 7


def test_mix_sets_the_expected_synthetic_share():
    labels = torch.arange(1000) % 2  # 100 real rows, 900 synthetic
    g = torch.Generator().manual_seed(0)
    proportional = BatchPlan(labels, 50, 2, n_synthetic=900)
    mixed = BatchPlan(labels, 50, 2, n_synthetic=900, mix=0.25)
    share = [sum(p.count_synthetic(p.next(g)) for _ in range(200)) / (200 * 50) for p in (proportional, mixed)]
    assert share[0] == pytest.approx(0.9, abs=0.02)
    assert share[1] == pytest.approx(0.25, abs=0.02)
    with pytest.raises(ConfigError, match="mix"):
        BatchPlan(labels, 50, 2, n_synthetic=900, mix=1.5)


def test_two_arms_of_different_sizes_get_identical_step_counts():
    config = TrainConfig(steps=12, eval_every=4, batch_size=8, lr=3e-3)
    val = squares(16, 1)
    small = train_classifier(_model(), squares(24, 0), val, config, seed=0)
    real, synthetic = squares(24, 0), squares(120, 5)
    both = (torch.cat([real[0], synthetic[0]]), torch.cat([real[1], synthetic[1]]))
    large = train_classifier(_model(), both, val, config, seed=0, n_synthetic=120)
    assert small.steps_run == large.steps_run == 12
    assert [h["step"] for h in small.history] == [h["step"] for h in large.history] == [4, 8, 12]
    assert small.images_real + small.images_synthetic == large.images_real + large.images_synthetic == 12 * 8
    assert small.images_synthetic == 0 and large.images_synthetic > 0
    assert small.best_step in (4, 8, 12) and small.budget == "steps"
    # the same steps with a fixed mix: the synthetic share follows the mix, not the counts
    mixed = train_classifier(_model(), both, val, config, seed=0, n_synthetic=120, mix=0.0)
    assert mixed.images_synthetic == 0 and mixed.steps_run == 12


def test_patience_stops_early_and_keeps_the_best_step():
    config = TrainConfig(steps=40, eval_every=2, batch_size=8, lr=1e-9, patience=2, augment=False)
    result = train_classifier(_model(), squares(24, 0), squares(16, 1), config, seed=0)
    assert result.stopped_early and "no validation gain" in result.stopped_early
    assert result.steps_run < 40
    assert result.steps_run == result.best_step + 2 * 2  # two evaluations, two steps apart, without a gain


def test_step_budget_resumes_to_the_same_model(tmp_path):
    config = TrainConfig(steps=9, eval_every=3, batch_size=8, lr=3e-3)
    real, synthetic = squares(20, 0), squares(30, 5)
    train = (torch.cat([real[0], synthetic[0]]), torch.cat([real[1], synthetic[1]]))
    val = squares(16, 1)
    straight = _model()
    expected = train_classifier(straight, train, val, config, seed=2, n_synthetic=30, mix=0.5)

    class Killed(Exception):
        pass

    def kill(info):
        if info["step"] == 3:
            raise Killed

    with pytest.raises(Killed):
        train_classifier(_model(), train, val, config, seed=2, state_dir=tmp_path, progress=kill,
                         n_synthetic=30, mix=0.5)
    resumed = _model()
    result = train_classifier(resumed, train, val, config, seed=2, state_dir=tmp_path, n_synthetic=30, mix=0.5)
    assert [h["step"] for h in result.history] == [3, 6, 9]
    assert (result.images_real, result.images_synthetic) == (expected.images_real, expected.images_synthetic)
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-5), key


def test_dp_arms_take_equal_noisy_steps_at_the_same_epsilon():
    config = TrainConfig(steps=6, eval_every=3, batch_size=16, lr=2e-3, augment=False)
    val = squares(16, 1)
    small = train_classifier(_model(), squares(48, 0), val, config, seed=0, dp=DPConfig(epsilon=4.0))
    large = train_classifier(_model(), squares(160, 0), val, config, seed=0, dp=DPConfig(epsilon=4.0))
    assert small.steps_run == large.steps_run == 6
    for result in (small, large):
        assert 0.9 * 4.0 <= result.epsilon_spent <= 1.02 * 4.0
    # the larger arm samples each record less often, so it needs less noise for the same epsilon
    assert large.noise_multiplier < small.noise_multiplier
    with pytest.raises(ConfigError, match="mix"):
        train_classifier(_model(), squares(48, 0), val, config, dp=DPConfig(epsilon=4.0), n_synthetic=8, mix=0.5)
