"""BatchNorm adaptation to a new site (classifiers.adapt): statistics, isolation, cross-fitting by patient."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from oncosynth.classifiers import create_classifier, predict_proba
from oncosynth.classifiers.adapt import adapt_batchnorm, cross_fitted_proba, patient_folds
from oncosynth.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_classifier("resnet10t", in_chans=1, classes=["benign", "malignant"]).eval()


def _first_bn(model: nn.Module) -> nn.BatchNorm2d:
    return next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_adapted_statistics_are_the_new_sites_and_the_model_is_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    darker = (torch.rand(24, 1, 32, 32) * 0.5 * 255).to(torch.uint8)  # one batch: exact statistics
    adapted = adapt_batchnorm(model, darker, batch_size=64)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    seen = []
    bn = _first_bn(adapted)
    handle = bn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        adapted(darker.float() / 255)
    handle.remove()
    # the layer now normalises with the mean and variance its input has on these images
    assert torch.allclose(bn.running_mean, seen[0].mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, seen[0].var(dim=(0, 2, 3)), rtol=1e-4)
    assert not torch.allclose(bn.running_mean, _first_bn(model).running_mean)
    assert not adapted.training


def test_patient_folds_keep_each_patient_in_one_fold():
    patients = [f"p{i // 3}" for i in range(30)]
    fold = patient_folds(patients, folds=2, seed=1)
    by_patient = {}
    for p, k in zip(patients, fold):
        by_patient.setdefault(p, set()).add(int(k))
    assert all(len(ks) == 1 for ks in by_patient.values())
    assert set(fold.tolist()) == {0, 1}
    with pytest.raises(ConfigError, match="at least 2 patients"):
        patient_folds(["only"] * 4)


def test_cross_fitted_scores_never_use_the_scored_folds_own_images(model):
    torch.manual_seed(1)
    images = (torch.rand(20, 1, 32, 32) * 255).to(torch.uint8)
    patients = [f"p{i // 2}" for i in range(20)]
    fold = patient_folds(patients, 2, seed=0)
    base = cross_fitted_proba(model, images, patients, folds=2, seed=0)
    changed = images.clone()
    j = int((fold == 0).nonzero()[0][0])
    changed[j] = 255 - changed[j]  # alter one image of fold 0
    after = cross_fitted_proba(model, changed, patients, folds=2, seed=0)
    others_in_fold = (fold == 0) & (torch.arange(20).numpy() != j)
    # fold 0 is scored by a copy adapted on fold 1 only: its other images keep their scores ...
    assert (abs(after[others_in_fold] - base[others_in_fold]) < 1e-6).all()
    # ... while fold 1, scored by a copy adapted on fold 0, sees the change
    assert abs(after[fold == 1] - base[fold == 1]).max() > 1e-6
    # and with no adaptation at all, the plain scores differ from the adapted ones
    assert abs(predict_proba(model, images) - base).max() > 1e-6


def test_a_model_without_batchnorm_is_refused(model):
    grouped = create_classifier("resnet10t", in_chans=1).prepare_for_dp()
    with pytest.raises(ConfigError, match="no BatchNorm"):
        adapt_batchnorm(grouped, torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="at least one image"):
        adapt_batchnorm(model, torch.zeros(0, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="patient ids"):
        cross_fitted_proba(model, torch.zeros(3, 1, 32, 32, dtype=torch.uint8), ["a", "b"])
