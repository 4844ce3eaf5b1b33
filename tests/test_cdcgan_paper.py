"""MCGAN as its authors' released configuration defines it (RichardObi/mammo_dp, dcgan_config.yaml)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oncosynth.errors import ConfigError
from oncosynth.generators import create_generator
from oncosynth.generators.cdcgan import ConditionalDCGAN, sigmoid_bce


pytestmark = pytest.mark.usefixtures("one_thread")


def built(size: int = 32, **options) -> ConditionalDCGAN:
    gen = create_generator("cdcgan", **{"width": 4, "size": size, **options})
    gen.configure(["benign", "malignant"], 1, size)
    return gen


def batch(n: int = 4, size: int = 32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1, torch.arange(n) % 2


def test_paper_preset_is_the_released_configuration():
    gen = create_generator("cdcgan", preset="paper")
    gen.configure(["benign", "malignant"], 1, 128)
    cfg = gen.config
    assert (cfg["width"], cfg["batch_size"], cfg["leak"], cfg["d_steps_per_g"]) == (64, 8, 0.1, 2)
    convs = [m for m in gen.D.main if isinstance(m, torch.nn.Conv2d)]
    assert all(c.kernel_size == (6, 6) for c in convs)
    assert [c.padding for c in convs] == [(2, 2)] * 5 + [(1, 1)]
    assert all(isinstance(m, torch.nn.InstanceNorm2d) for m in gen.D.main if "Norm" in type(m).__name__)
    assert sum(p.numel() for p in gen.D.parameters()) == pytest.approx(25.94e6, rel=1e-3)  # released D
    slopes = {m.negative_slope for net in (gen.G, gen.D) for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.1}
    images = gen.D(torch.zeros(2, 1, 128, 128), torch.tensor([0, 1]))
    assert images.shape == (2,)


def test_two_discriminator_steps_per_generator_step():
    gen = built(d_steps_per_g=2)
    reals, labels = batch()
    updated = []
    for step in range(6):
        gen.step = step
        before = [p.detach().clone() for p in gen.G.parameters()]
        losses = gen.train_step(reals, labels)
        changed = any(not torch.equal(a, b) for a, b in zip(before, gen.G.parameters()))
        updated.append(changed)
        assert changed == ("loss_G" in losses) and "loss_D" in losses
    assert updated == [True, False, True, False, True, False]
    one = built(d_steps_per_g=1)
    assert all(one.updates_generator(s) for s in range(4))


def test_released_sigmoid_bce_matches_torch_bce_and_saturates_where_logits_do_not():
    logits = torch.tensor([-3.0, 0.2, 4.0])
    targets = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(sigmoid_bce(logits, targets), F.binary_cross_entropy(torch.sigmoid(logits), targets))
    # A confident fake (logit 20) that G wants called real: float32 sigmoid rounds to 1, the gradient vanishes.
    x = torch.tensor([20.0], requires_grad=True)
    sigmoid_bce(x, torch.zeros(1)).backward()
    assert float(x.grad) == 0.0
    y = torch.tensor([20.0], requires_grad=True)
    F.binary_cross_entropy_with_logits(y, torch.zeros(1)).backward()
    assert float(y.grad) == pytest.approx(1.0)
    # Smoothed real targets above 1 (up to 1.2) are accepted, as the released code's torch accepted them.
    assert torch.isfinite(sigmoid_bce(torch.tensor([0.3]), torch.tensor([1.2])))


def test_options_train_and_unit_range_shifts_the_reals():
    reals, labels = batch()
    for options in ({"norm": "batch", "d_kernel": 4, "leak": 0.2, "d_steps_per_g": 1},
                    {"loss": "sigmoid"}, {"real_range": "unit"}):
        gen = built(**options)
        losses = gen.train_step(reals, labels)
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), options
    seen = []
    gen = built(real_range="unit")
    original = gen.D.forward
    gen.D.forward = lambda images, lab: (seen.append(images.detach()), original(images, lab))[1]
    gen.train_step(reals, labels)
    assert torch.allclose(seen[0], (reals + 1) / 2)


def test_bad_options_and_legacy_checkpoints():
    with pytest.raises(ConfigError, match="d_kernel must be one of"):
        built(d_kernel=5)
    with pytest.raises(ConfigError, match="norm must be one of"):
        built(norm="layer")
    config = built().checkpoint_config()
    old = {k: v for k, v in config["config"].items() if k not in ("d_kernel", "leak", "norm", "d_steps_per_g")}
    restored = ConditionalDCGAN.from_config({**config, "config": old})
    assert (restored.config["d_kernel"], restored.config["leak"], restored.config["norm"]) == (4, 0.2, "batch")
    assert restored.config["d_steps_per_g"] == 1


def test_cli_option_strings_become_settings():
    from oncosynth.cli.generators import parse_options

    assert parse_options(['norm="batch"', "d_steps_per_g=1", "leak=0.2", "loss=sigmoid"]) == {
        "norm": "batch", "d_steps_per_g": 1, "leak": 0.2, "loss": "sigmoid"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_options(["norm"])
