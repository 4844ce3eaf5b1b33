"""Classifiers: construction, heads, weights files, checkpoints, augmentations, training, resume, DP-SGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file
from sklearn.metrics import average_precision_score, roc_auc_score

from oncosynth.heap import status as heap_status
from oncosynth.checkpoint import save_checkpoint
from oncosynth.classifiers import (DPConfig, TrainConfig, create_classifier, load_classifier, predict_proba,
                                   save_classifier, train_classifier)
from oncosynth.classifiers.augment import AugmentConfig, augment_batch
from oncosynth.classifiers.scores import auprc, auroc, macro_auroc, threshold_metrics, youden_threshold
from oncosynth.errors import CheckpointError, ConfigError
from toy_data import squares

CLASSES = ["benign", "malignant"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------- models ----
def test_backbone_features_and_logits():
    model = create_classifier("resnet10t", in_chans=1, num_classes=3, img_size=32, classes=["a", "b", "c"])
    x = torch.rand(2, 1, 32, 32)
    assert model(x).shape == (2, 3)
    assert model.features(x).shape == (2, model.width)
    assert model.classes == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="unknown timm backbone"):
        create_classifier("no_such_net")


def test_frozen_swin_gets_the_mlp_head_and_is_sized_for_the_input():
    model = create_classifier("swin_tiny_patch4_window7_224", in_chans=1, num_classes=2, img_size=64,
                              freeze_backbone=True)
    head = model.head
    assert [type(m) for m in head] == [nn.Linear, nn.LeakyReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (768, 384, 2)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2)
    model.train()
    assert not model.backbone.training  # frozen statistics stay frozen


def test_save_and_load_round_trip(tmp_path):
    model = create_classifier("resnet10t", 1, 2, 32, classes=CLASSES).eval()
    save_classifier(model, tmp_path / "clf", manifest={"note": "test"})
    loaded = load_classifier(tmp_path / "clf")
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(model(x), loaded(x))
    assert loaded.classes == CLASSES
    save_checkpoint(tmp_path / "gen", {"w": torch.zeros(1)}, {"kind": "generator/cdcgan"})
    with pytest.raises(CheckpointError, match="expected 'classifier'"):
        load_classifier(tmp_path / "gen")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_pretrained_weights_adapt_channels(tmp_path, suffix):
    source = create_classifier("resnet10t", in_chans=3, num_classes=2)
    state = {k: v.contiguous() for k, v in source.backbone.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = create_classifier("resnet10t", in_chans=1, num_classes=2, pretrained=path)
    target = model.backbone.state_dict()
    assert torch.equal(target["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    stem = target["conv1.0.weight"]  # 3-channel stem folded into one channel
    assert stem.shape[1] == 1 and torch.allclose(stem[:, 0], state["conv1.0.weight"].sum(1))
    with pytest.raises(ConfigError, match="not found"):
        create_classifier("resnet10t", pretrained=tmp_path / "missing.pt")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": object()}, path)
    with pytest.raises(CheckpointError):
        create_classifier("resnet10t", pretrained=path)


# --------------------------------------------------------- augmentation ----
def test_augment_batch_keeps_shape_range_and_is_seeded():
    x = torch.rand(6, 3, 24, 24)
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, x)
    empty = augment_batch(x[:0], AugmentConfig(), torch.Generator())
    assert empty.shape == (0, 3, 24, 24)


# --------------------------------------------------------------- scores ----
def test_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200) + 0.3 * y, 2)  # rounding makes ties
    assert auroc(y, score) == pytest.approx(roc_auc_score(y, score))
    assert auprc(y, score) == pytest.approx(average_precision_score(y, score))
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], 300) + np.eye(3)[labels] * 0.3
    probs /= probs.sum(1, keepdims=True)
    macro, per_class = macro_auroc(labels, probs)
    assert macro == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert per_class[1] == pytest.approx(roc_auc_score(labels == 1, probs[:, 1]))


def test_threshold_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    score = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05])
    m = threshold_metrics(y, score, 0.5)  # TP=2 FN=1 FP=1 TN=3
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    # Youden's J: t=0.6 gives 2/3 + 3/4; t=0.2 gives 1 + 2/4 -> 0.2 wins (1.5 > 1.4167)
    assert youden_threshold(y, score) == pytest.approx(0.2)


# ------------------------------------------------------------- training ----
def test_training_learns_and_selects_on_validation():
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, balance="weighted")
    result = train_classifier(model, squares(96, 0, 16), squares(32, 1, 16), config, seed=0)
    assert result.best_score > 0.9
    assert result.best_epoch == 1 + int(np.argmax([h["val_auroc"] for h in result.history]))
    probs = predict_proba(model, squares(64, 2, 16)[0])
    assert probs.shape == (64, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_resume_after_kill_gives_the_same_model(tmp_path):
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, balance="oversample")
    train, val = squares(48, 0, 16), squares(16, 1, 16)
    torch.manual_seed(0)
    straight = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    train_classifier(straight, train, val, config, seed=3)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(info):
        if info["epoch"] == 1:
            raise Killed

    interrupted = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    interrupted.load_state_dict(initial)
    with pytest.raises(Killed):
        train_classifier(interrupted, train, val, config, seed=3, state_dir=tmp_path, progress=kill_after_first_epoch)
    resumed = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    resumed.load_state_dict(initial)
    result = train_classifier(resumed, train, val, config, seed=3, state_dir=tmp_path)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-5), key


def check_privacy_accounting(result, epsilon: float, delta: float, sample_rate: float, steps: int) -> None:
    """DP-SGD numbers against opacus' own analysis, fed the sampling rate and step count worked out by hand:
    the noise multiplier is what ``get_noise_multiplier`` picks for them, the epsilon spent is the RDP bound
    of the sampled Gaussian mechanism for that many steps, and it is within 1 % of (and not above) the target."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    from opacus.accountants.utils import get_noise_multiplier

    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
                                 accountant="rdp")
    assert result.noise_multiplier == pytest.approx(sigma, rel=1e-9)
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=steps, orders=orders)
    spent, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    assert result.epsilon_spent == pytest.approx(spent, rel=1e-9)
    assert 0.99 * epsilon <= result.epsilon_spent <= epsilon


def test_dp_sgd_spends_the_target_epsilon_with_a_trainable_resnet(tmp_path):
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    config = TrainConfig(epochs=2, batch_size=16, lr=2e-3)
    result = train_classifier(model, squares(64, 0, 16), squares(16, 1, 16), config, seed=0,
                              dp=DPConfig(epsilon=6.0), state_dir=tmp_path)
    check_privacy_accounting(result, epsilon=6.0, delta=1e-4, sample_rate=16 / 64, steps=2 * 4)
    assert heap_status()["policy"] in ("set", "unsupported", "user", "off")  # DP asked glibc to keep freed memory
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    keys = list(model.state_dict())
    assert list(model.prepare_for_dp().state_dict()) == keys  # idempotent
    save_classifier(model, tmp_path / "dp-model")  # the DP layout is rebuilt on load
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(model.eval()(x), load_classifier(tmp_path / "dp-model")(x), atol=1e-6)
    with pytest.raises(ConfigError, match="oversampling"):
        train_classifier(model, squares(64, 0, 16), squares(32, 1, 16), config.model_copy(
            update={"balance": "oversample"}), dp=DPConfig(epsilon=6.0))


def test_dp_sgd_with_a_frozen_swin_backbone_trains_only_the_head():
    model = create_classifier("swin_tiny_patch4_window7_224", 1, 2, 32, classes=CLASSES, freeze_backbone=True)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-2, augment=False)
    result = train_classifier(model, squares(48, 0, 32), squares(16, 1, 32), config, seed=0, dp=DPConfig(epsilon=3.0))
    check_privacy_accounting(result, epsilon=3.0, delta=1e-4, sample_rate=16 / 48, steps=1 * 3)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())
