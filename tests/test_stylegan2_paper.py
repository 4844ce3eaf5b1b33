"""StyleGAN2-ADA as the released code defines it: regularisers, schedule, label draws, ADA details.

Facts of NVlabs/stylegan2-ada-pytorch checked on tiny models (the output-level
comparison with copied weights runs outside the test suite; see bench/RESULTS.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from oncosynth.generators import create_generator
from oncosynth.generators.ada import AugmentPipe, _eye, _scale
from oncosynth.generators.stylegan2 import StyleGAN2ADA

TINY = {"size": 32, "z_dim": 8, "w_dim": 8, "map_layers": 1, "d_map_layers": 1, "channel_base": 128,
        "channel_max": 8, "batch_size": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def built(**options) -> StyleGAN2ADA:
    gen = create_generator("stylegan2-ada", **{**TINY, **options})
    gen.configure(["benign", "malignant"], 1, 32)
    return gen


def batch(n: int = 4):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, torch.arange(n) % 2


def test_paper_preset_is_the_released_default_configuration():
    gen = create_generator("stylegan2-ada", preset="paper")
    gen.configure(["benign", "malignant"], 1, 64)
    cfg = gen.config
    assert len(gen.G.mapping.layers) == 2 and len(gen.D.mapping.layers) == 8
    assert (cfg["z_dim"], cfg["w_dim"], cfg["conv_clamp"], cfg["batch_size"]) == (512, 512, 256, 32)
    assert (cfg["style_mixing"], cfg["pl_weight"], cfg["pl_interval"], cfg["r1_interval"]) == (0.9, 2.0, 4, 16)
    assert gen.r1_gamma == pytest.approx(0.0002 * 64 ** 2 / 32)
    assert gen.augment.oversample and gen.augment.grey_lumaflip and gen.ada.p_max is None
    # Lazy regularisation: Adam's lr and betas scaled by I / (I + 1); G at 0.002 and 0.99 ** 0.8.
    g_group, d_group = gen.opt_G.param_groups[0], gen.opt_D.param_groups[0]
    assert g_group["lr"] == pytest.approx(0.002) and g_group["betas"][1] == pytest.approx(0.99 ** 0.8)
    assert d_group["lr"] == pytest.approx(0.0025 * 16 / 17) and d_group["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert gen.G.num_ws == 2 * 5  # 4..64 px: one conv at 4 px, two per block after, plus the last toRGB


def test_lazy_regularisers_run_on_their_own_schedule():
    gen = built(pl_interval=2, r1_interval=4)
    reals, labels = batch()
    seen = []
    for step in range(9):
        gen.step = step
        losses = gen.train_step(reals, labels)
        seen.append(("pl_penalty" in losses, "r1" in losses))
    assert [pl for pl, _ in seen] == [s % 2 == 0 for s in range(9)]
    assert [r1 for _, r1 in seen] == [s % 4 == 0 for s in range(9)]


def test_path_length_penalty_is_nonnegative_and_zero_for_one_image_at_its_own_mean():
    gen = built(pl_interval=1)
    reals, labels = batch()
    penalties = [gen.train_step(reals, labels)["pl_penalty"] for _ in range(3)]
    assert all(p >= 0 for p in penalties) and max(penalties) > 0
    assert float(gen.pl_mean) > 0  # the moving average of the lengths
    # pl_decay = 1 sets the mean to this batch's mean length; with one image the penalty is exactly 0.
    lone = built(pl_interval=1, pl_decay=1.0, pl_batch_shrink=4)
    assert lone.train_step(reals, labels)["pl_penalty"] == 0.0


def test_r1_is_nonnegative_and_zero_when_d_ignores_the_image():
    gen = built(r1_interval=1)
    reals, labels = batch()
    _, r1 = gen._real_logits(reals, labels, with_r1=True)
    assert r1.shape == (4,) and bool((r1 >= 0).all()) and float(r1.detach().sum()) > 0
    with torch.no_grad():
        gen.D.from_rgb.weight.zero_()  # D no longer sees the pixels: its gradient is zero
    _, r1 = gen._real_logits(reals, labels, with_r1=True)
    assert float(r1.detach().abs().max()) == 0.0


def test_fake_labels_follow_the_training_class_frequencies():
    torch.manual_seed(0)
    gen = built()
    gen.class_counts = torch.tensor([900, 100])
    drawn = gen.fake_labels(20000, torch.zeros(4, dtype=torch.long))
    assert abs(float(drawn.float().mean()) - 0.1) < 0.01
    uniform = built(fake_labels="uniform").fake_labels(20000, torch.zeros(4, dtype=torch.long))
    assert abs(float(uniform.float().mean()) - 0.5) < 0.02
    # Without counts (train_step outside the loop): drawn from the real batch's labels.
    gen.class_counts = None
    assert set(gen.fake_labels(100, torch.ones(4, dtype=torch.long)).tolist()) == {1}


def test_training_loop_hands_the_class_counts_to_the_generator(tmp_path):
    images = (torch.rand(10, 1, 32, 32) * 255).to(torch.uint8)
    labels = torch.tensor([0] * 8 + [1] * 2)
    gen = create_generator("stylegan2-ada", **{**TINY, "pl_interval": 1, "r1_interval": 1})
    gen.fit((images, labels, ["benign", "malignant"]), tmp_path / "run", steps=2, batch_size=4, progress=False)
    assert gen.class_counts.tolist() == [8, 2]


def test_style_mixing_takes_the_later_layers_from_a_second_latent():
    torch.manual_seed(0)
    z, labels = torch.randn(3, 8), torch.tensor([0, 1, 0])
    _, ws = built(style_mixing=1.0).run_G(z, labels)
    assert not torch.allclose(ws[:, 0], ws[:, -1])        # cutoff in [1, num_ws): the last w is the other one
    _, ws = built(style_mixing=0.0).run_G(z, labels)
    assert torch.equal(ws[:, 0], ws[:, -1])


def test_luma_flip_inverts_a_grey_image():
    only = {k: 0 for k in AugmentPipe().weights}
    pipe = AugmentPipe(**{**only, "lumaflip": 1})
    pipe.p.fill_(1.0)
    torch.manual_seed(0)
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    out = pipe(x)
    inverted = [torch.allclose(o, -i, atol=1e-6) for o, i in zip(out, x)]
    kept = [torch.allclose(o, i, atol=1e-6) for o, i in zip(out, x)]
    assert all(a or b for a, b in zip(inverted, kept)) and 4 < sum(inverted) < 28  # half of them, at p = 1
    old = AugmentPipe(**{**only, "lumaflip": 1}, grey_lumaflip=False)
    old.p.fill_(1.0)
    assert torch.equal(old(x), x)


def test_oversampled_warp_is_the_identity_for_the_identity_and_close_to_a_flip_on_smooth_images():
    pipe = AugmentPipe()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    smooth = torch.sin(2 * xx + yy)[None, None].repeat(2, 1, 1, 1)
    same = pipe._warp_oversampled(smooth, _eye(3, 2, "cpu"))
    assert torch.allclose(same, smooth, atol=1e-5)
    mirrored = pipe._warp_oversampled(smooth, _scale(-torch.ones(2), torch.ones(2)))
    assert (mirrored - smooth.flip(-1)).abs().max() < 0.03   # a 2x resampled flip, as released


def test_checkpoints_from_before_these_settings_keep_their_behaviour():
    gen = built()
    config = gen.checkpoint_config()
    old = {k: v for k, v in config["config"].items()
           if k not in ("resample", "style_mixing", "pl_weight", "fake_labels", "d_map_layers", "r1_mode")}
    restored = StyleGAN2ADA.from_config({**config, "config": old})
    assert restored.config["resample"] == "bilinear" and restored.config["style_mixing"] == 0.0
    assert restored.config["r1_mode"] == "folded" and restored.config["fake_labels"] == "uniform"
    assert len(restored.D.mapping.layers) == len(restored.G.mapping.layers)


def test_every_option_trains_and_the_ema_ramp_starts_at_the_first_image():
    reals, labels = batch()
    for options in ({"resample": "bilinear"}, {"r1_mode": "folded", "r1_interval": 2}, {"r1_interval": 0},
                    {"pl_weight": 0.0, "pl_interval": 0}, {"conv_clamp": 1.0}, {"ada_oversample": False}):
        gen = built(augment_p=0.5, **options)
        for step in range(2):
            gen.step = step
            losses = gen.train_step(reals, labels)
            assert all(math.isfinite(v) for v in losses.values()), options
    # EMA ramp-up as released: computed from the images seen *before* this step (0 at the first step),
    # so the first update copies G into G_ema.
    gen = built()
    gen.train_step(reals, labels)
    assert all(torch.equal(a, b) for a, b in zip(gen.G_ema.parameters(), gen.G.parameters()))
