"""Classifier recipe options: normalisation, robustness augmentations, mixup/cutmix, EMA, TTA, one-cycle, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from oncosynth.classifiers import (DPConfig, TrainConfig, create_classifier, load_classifier, predict_proba,
                                   save_classifier, train_classifier)
from oncosynth.classifiers.augment import AugmentConfig, augment_batch, gaussian_blur
from oncosynth.classifiers.normalise import equalise, percentile_scale, standardise
from oncosynth.classifiers.recipe import PRESETS, recipe_scheduler
from oncosynth.classifiers.regularise import WeightEMA, mix_batch
from oncosynth.errors import ConfigError
from oncosynth.study.config import parse_config
from toy_data import squares

CLASSES = ["benign", "malignant"]
OFF = dict(flips=False, rot90=False, degrees=0, translate=0, scale=0, brightness=0, contrast=0, colour=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def backbone_input(model, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


# -------------------------------------------------------- normalisation ----
def test_standardised_inputs_have_mean_0_and_std_1_per_image():
    x = torch.rand(5, 1, 16, 16) * torch.linspace(0.1, 0.9, 5).view(5, 1, 1, 1) + 0.05
    out = standardise(x)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2, 3), correction=0), torch.ones(5), atol=1e-4)
    assert torch.allclose(standardise(torch.full((1, 1, 4, 4), 0.3)), torch.zeros(1, 1, 4, 4), atol=1e-3)  # flat


def test_percentile_normalisation_maps_p1_p99_to_0_1():
    x = torch.rand(3, 3, 20, 20) * 0.4 + 0.3
    out = percentile_scale(x, 1, 99)
    flat = x.reshape(3, -1).numpy()
    for i in range(3):
        lo, hi = np.percentile(flat[i], [1, 99])
        expected = np.clip((flat[i] - lo) / (hi - lo), 0, 1)
        assert np.allclose(out[i].reshape(-1).numpy(), expected, atol=1e-5)
    assert out.min() == 0 and out.max() == 1


def test_equalisation_gives_each_pixel_its_rank_share_and_ignores_a_tone_curve():
    x = torch.tensor([[[[0.2, 0.9], [0.5, 0.2]]]])
    assert torch.equal(equalise(x), torch.tensor([[[[0.5, 1.0], [0.75, 0.5]]]]))  # ties share their top rank
    images = torch.rand(3, 1, 16, 16) * 0.5 + 0.1
    darker = images ** 2.2 * 0.6  # another scanner's increasing tone curve
    assert torch.equal(equalise(darker), equalise(images))
    assert torch.equal(equalise(torch.full((1, 1, 4, 4), 0.3)), torch.ones(1, 1, 4, 4))  # flat


def test_the_classifier_normalises_its_input_and_its_checkpoint_remembers(tmp_path):
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES).eval()
    x = torch.rand(4, 1, 16, 16) * 0.3  # dark images, as from another scanner
    plain = backbone_input(model, x)
    assert torch.allclose(plain, (x - model.mean) / model.std)
    model.set_input_handling("standardise")
    seen = backbone_input(model, x)
    assert torch.allclose(seen.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(seen.std(dim=(1, 2, 3), correction=0), torch.ones(4), atol=1e-4)
    # darker and flatter versions of an image look the same to a standardising classifier
    assert torch.allclose(model(x), model(0.5 * x + 0.1), atol=1e-4)
    save_classifier(model, tmp_path / "m")
    loaded = load_classifier(tmp_path / "m")
    assert loaded.config["input_norm"] == "standardise" and loaded.input_norm == "standardise"
    assert torch.allclose(backbone_input(loaded, x), seen)
    model.set_input_handling("equalise")  # a gamma-darkened image looks the same to an equalising classifier
    assert torch.allclose(backbone_input(model, x), (equalise(x) - model.mean) / model.std)
    assert torch.equal(model(x), model(x ** 1.8))
    with pytest.raises(ConfigError):
        model.set_input_handling("zscore")


def test_training_puts_the_configured_normalisation_on_the_model():
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    train, val = squares(16, 0), squares(8, 1)
    train_classifier(model, train, val, TrainConfig(epochs=1, batch_size=8, normalise="percentile",
                                                    percentiles=(2, 98), augment=False))
    assert model.input_norm == "percentile" and model.config["input_percentiles"] == [2.0, 98.0]
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(backbone_input(model, x), (percentile_scale(x, 2, 98) - model.mean) / model.std)


# ------------------------------------------------------------------ TTA ----
def test_flip_tta_is_the_mean_of_the_flipped_predictions(tmp_path):
    torch.manual_seed(0)
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES).eval()
    images = squares(6, 2)[0]
    x = images.float() / 255
    with torch.no_grad():
        by_hand = torch.stack([torch.softmax(model(v), 1) for v in (x, x.flip(3), x.flip(2), x.flip(2, 3))]).mean(0)
    plain = predict_proba(model, images)
    model.set_input_handling(tta=True)
    tta = predict_proba(model, images, batch_size=4)
    assert np.allclose(tta, by_hand.numpy(), atol=1e-6)
    assert not np.allclose(tta, plain, atol=1e-6)
    save_classifier(model, tmp_path / "m")
    assert np.allclose(predict_proba(load_classifier(tmp_path / "m"), images), tta, atol=1e-6)


# ---------------------------------------------------------- augmentation ----
@pytest.mark.parametrize("option", [{"crop_scale": 0.5}, {"elastic": 0.05}, {"gamma": 0.4}, {"blur": 1.5},
                                    {"noise": 0.05}])
def test_each_robustness_augmentation_acts(option):
    x = torch.rand(6, 1, 24, 24) * 0.5 + 0.25
    out = augment_batch(x, AugmentConfig(**OFF, **option), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.allclose(out, x, atol=1e-3)
    assert torch.equal(augment_batch(x, AugmentConfig(**OFF), torch.Generator().manual_seed(0)), x)


def test_crop_zooms_in_and_gamma_is_a_power():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).repeat(4, 1, 32, 1)
    cropped = augment_batch(ramp, AugmentConfig(**OFF, crop_scale=0.3), torch.Generator().manual_seed(1))
    spans = cropped.amax(dim=(1, 2, 3)) - cropped.amin(dim=(1, 2, 3))
    assert (spans < 0.99).all() and spans.mean() < 0.9  # a window of the ramp, shown at full size
    gamma = augment_batch(ramp, AugmentConfig(**OFF, gamma=0.5), torch.Generator().manual_seed(1))
    for i in range(4):  # out = x ** p for one p per image
        inner = (ramp[i] > 0.1) & (ramp[i] < 0.9)
        p = torch.log(gamma[i][inner]) / torch.log(ramp[i][inner])
        assert torch.allclose(p, p[0].expand_as(p), atol=1e-3)


def test_blur_matches_a_hand_made_kernel_and_sigma_0_is_identity():
    x = torch.rand(2, 1, 16, 16)
    out = gaussian_blur(x, torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[0], x[0])
    k = torch.exp(-torch.arange(-3, 4.0) ** 2 / 2)
    k = k / k.sum()
    centre = sum(k[i] * k[j] * x[1, 0, 8 + i - 3, 8 + j - 3] for i in range(7) for j in range(7))
    assert torch.isclose(out[1, 0, 8, 8], centre, atol=1e-5)


# ------------------------------------------------------- mixup / cutmix ----
def test_mixup_labels_are_the_convex_combination_of_the_mixed_images():
    n = 6
    x, y = torch.rand(n, 1, 8, 8), torch.arange(n)  # one class per image: the partner is readable
    mixed, targets = mix_batch(x, y, n, mixup=0.4, cutmix=0, prob=1.0, generator=torch.Generator().manual_seed(0))
    assert targets.shape == (n, n) and torch.allclose(targets.sum(1), torch.ones(n))
    diagonal = targets.diagonal()
    lam = float(diagonal[diagonal < 1][0])  # one lam per batch; images paired with themselves keep 1
    for i in range(n):
        partner = int(torch.argmin(torch.where(torch.arange(n) == i, 2.0, -targets[i]))) \
            if targets[i, i] < 1 else i
        assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[partner], atol=1e-6)
        if partner != i:
            assert torch.isclose(targets[i, i], torch.tensor(lam)) and torch.isclose(targets[i, partner],
                                                                                     torch.tensor(1 - lam))
    same, labels = mix_batch(x, y, n, mixup=0.4, cutmix=0, prob=0.0, generator=torch.Generator())
    assert same is x and labels is y


def test_cutmix_labels_are_the_pasted_pixel_shares():
    n = 5
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 16, 16).clone()
    for seed in range(4):
        mixed, targets = mix_batch(x, torch.arange(n), n, mixup=0, cutmix=1.0, prob=1.0,
                                   generator=torch.Generator().manual_seed(seed))
        for i in range(n):
            own = (mixed[i] == i).float().mean()
            assert torch.isclose(targets[i, i], own, atol=1e-6) or targets[i, i] == 1


def test_mixup_is_refused_with_dp_sgd():
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    with pytest.raises(ConfigError, match="DP-SGD"):
        train_classifier(model, squares(16, 0), squares(8, 1), TrainConfig(epochs=1, batch_size=8, mixup=0.2),
                         dp=DPConfig(epsilon=6))


# ------------------------------------------------------------------ EMA ----
def test_weight_ema_by_hand_after_two_steps():
    layer = nn.Linear(3, 2)
    w0 = layer.weight.detach().clone()
    ema = WeightEMA(layer, 0.9)
    with torch.no_grad():
        layer.weight.add_(1.0)
    w1 = layer.weight.detach().clone()
    ema.update(layer)
    with torch.no_grad():
        layer.weight.mul_(-2.0)
    w2 = layer.weight.detach().clone()
    ema.update(layer)
    assert torch.allclose(ema.shadow["weight"], 0.9 * (0.9 * w0 + 0.1 * w1) + 0.1 * w2)
    ema.swap_in(layer)
    assert torch.allclose(layer.weight, ema.shadow["weight"])
    ema.swap_out(layer)
    assert torch.equal(layer.weight, w2)


def test_training_with_ema_leaves_the_hand_computed_average_in_the_model():
    train, val = squares(16, 0), squares(8, 1)
    torch.manual_seed(0)
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    states = []
    hook = register_optimizer_step_post_hook(
        lambda *_: states.append({k: v.detach().clone() for k, v in model.named_parameters()}))
    try:  # 16 images, batch 8: two steps, one evaluation, so the EMA after step 2 is the selected model
        train_classifier(model, train, val, TrainConfig(epochs=1, batch_size=8, ema=0.8, augment=False))
    finally:
        hook.remove()
    assert len(states) == 2
    for key, value in model.named_parameters():
        by_hand = 0.8 * (0.8 * initial[key] + 0.2 * states[0][key]) + 0.2 * states[1][key]
        assert torch.allclose(value, by_hand, atol=1e-6), key
        assert not torch.allclose(value, states[1][key]) or not value.requires_grad


def test_resume_with_ema_mixup_and_one_cycle_gives_the_same_model(tmp_path):
    config = TrainConfig(epochs=3, batch_size=8, lr=3e-3, ema=0.9, mixup=0.3, cutmix=1.0, mix_prob=0.7,
                         schedule="one-cycle", augmentations=AugmentConfig(crop_scale=0.7, blur=1, noise=0.02))
    train, val = squares(24, 0), squares(8, 1)
    torch.manual_seed(0)
    straight = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    train_classifier(straight, train, val, config, seed=3)

    class Killed(Exception):
        pass

    def kill(info):
        if info["epoch"] == 2:
            raise Killed

    interrupted = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    interrupted.load_state_dict(initial)
    with pytest.raises(Killed):
        train_classifier(interrupted, train, val, config, seed=3, state_dir=tmp_path, progress=kill)
    assert sorted(p.name for p in tmp_path.glob("ema_*.pt")) == ["ema_1.pt", "ema_2.pt"]
    resumed = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    resumed.load_state_dict(initial)
    train_classifier(resumed, train, val, config, seed=3, state_dir=tmp_path)
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-5), key


# ------------------------------------------------------------ one-cycle ----
def test_one_cycle_follows_torch_one_cycle_lr():
    total, lr = 12, 0.01
    config = TrainConfig(schedule="one-cycle", lr=lr, one_cycle_pct=0.25)
    mine_opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr)
    warm = torch.optim.lr_scheduler.LambdaLR(mine_opt, lambda s: (s + 1) / 3)  # the schedule it replaces
    mine = recipe_scheduler(warm, mine_opt, config, total)
    ref_opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=lr, total_steps=total, pct_start=0.25)
    for _ in range(total):
        assert mine_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
        assert mine_opt.param_groups[0]["betas"] == pytest.approx(ref_opt.param_groups[0]["betas"])
        mine_opt.step(), mine.step(), ref_opt.step(), ref.step()
    assert recipe_scheduler(warm, mine_opt, TrainConfig(), total) is warm


def test_training_steps_along_the_one_cycle_schedule():
    lrs = []
    model = create_classifier("resnet10t", 1, 2, 16, classes=CLASSES)
    hook = register_optimizer_step_pre_hook(
        lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    try:
        train_classifier(model, squares(16, 0), squares(8, 1),
                         TrainConfig(epochs=3, batch_size=8, lr=0.02, schedule="one-cycle", augment=False))
    finally:
        hook.remove()
    ref_opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=0.02)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.02, total_steps=6)
    expected = []
    for _ in range(6):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step(), ref.step()
    assert lrs == pytest.approx(expected)


# -------------------------------------------------------------- presets ----
def test_presets_set_their_options_and_explicit_settings_win():
    mammo = TrainConfig(recipe="mammo")  # the validation winner: percentile normalisation, lr 3e-4, else the default
    changed = {"recipe", "normalise", "lr"}
    assert mammo.model_dump(exclude=changed) == TrainConfig().model_dump(exclude=changed)
    assert mammo.normalise == "percentile" and mammo.lr == 3e-4
    assert TrainConfig(recipe="mammo", lr=1e-3).lr == 1e-3  # an explicit setting beside the preset wins
    histo = TrainConfig(recipe="histo")
    assert histo.normalise == "standardise" and histo.tta and histo.ema == 0.99 and histo.schedule == "one-cycle"
    assert histo.augmentations.crop_scale == PRESETS["histo"]["augmentations"]["crop_scale"]
    assert histo.augmentations.colour > 0 and histo.augmentations.elastic > 0 and histo.augmentations.degrees == 0
    custom = TrainConfig(recipe="histo", ema=None, augmentations={"noise": 0.0}, lr=3e-4)
    assert custom.ema is None and custom.augmentations.noise == 0 and custom.augmentations.gamma == 0.2
    assert custom.lr == 3e-4 and custom.recipe == "histo"
    default = TrainConfig()
    assert default.normalise == "none" and not default.tta and default.ema is None and default.mixup == 0
    assert default.schedule == "warmup-cosine" and default.augmentations == AugmentConfig()


def test_study_config_takes_a_recipe_and_rejects_unknown_ones():
    base = {"data": {"path": "x"}, "arms": [{"name": "real", "kind": "real"}]}
    config = parse_config({**base, "train": {"recipe": "histo", "epochs": 3}})
    assert config.train.normalise == "standardise" and config.train.epochs == 3
    with pytest.raises(ConfigError, match="recipe"):
        parse_config({**base, "train": {"recipe": "imagenet"}})
    with pytest.raises(ConfigError, match="percentiles"):
        parse_config({**base, "train": {"normalise": "percentile", "percentiles": [99, 1]}})


def test_a_grey_study_defaults_to_the_mammo_recipe_and_null_keeps_the_old_one():
    base = {"data": {"path": "x"}, "arms": [{"name": "real", "kind": "real"}]}
    grey = parse_config({**base, "train": {"epochs": 3}})
    assert grey.train.recipe == "mammo" and grey.train.normalise == "percentile" and grey.train.epochs == 3
    assert parse_config(base).train.recipe == "mammo"  # no train block at all
    old = parse_config({**base, "train": {"recipe": None}})
    assert old.train.recipe is None and old.train.normalise == "none"
    explicit = parse_config({**base, "train": {"normalise": "standardise"}})  # explicit keys beside it win
    assert explicit.train.recipe == "mammo" and explicit.train.normalise == "standardise"
    rgb = parse_config({**base, "data": {"path": "x", "channels": 3}})
    assert rgb.train.recipe is None and rgb.train.normalise == "none"
