"""Generator layer: registry, training loop (checkpoint, resume, divergence), MCGAN, StyleGAN2-ADA, ADA, CLI.

Everything runs on tiny configurations (32 px, a few channels, a few steps) on CPU.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from oncosynth.errors import CheckpointError, ConfigError, OncosynthError
from oncosynth.generators import create_generator, latest_checkpoint, list_generators, load_generator
from oncosynth.generators.ada import AdaController, AugmentPipe
from oncosynth.generators.stylegan2 import modulated_conv2d
from oncosynth.generators.training import TrainingDiverged

TINY = {
    "cdcgan": {"width": 4, "size": 32},
    "stylegan2-ada": {"size": 32, "z_dim": 8, "w_dim": 8, "map_layers": 1, "channel_base": 128,
                      "channel_max": 8, "r1_interval": 2},
}
METHODS = list(TINY)
FIT = {"batch_size": 4, "progress": False, "log_every": 1}


@pytest.fixture(autouse=True)
def _one_thread_and_cache_in_tmp(tmp_path, monkeypatch):
    # Tiny convolutions are slower with 2 threads on a busy 2-core machine; restore the setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(threads)


def tiny_data(n: int = 12, size: int = 32, channels: int = 1, classes=("benign", "malignant")):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, channels, size, size, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(n) % len(classes)
    return images, labels, list(classes)


def tiny(method: str, **extra):
    return create_generator(method, **{**TINY[method], **extra})


def training_tensors(gen) -> dict[str, torch.Tensor]:
    """Weights plus every tensor in the optimiser states, flattened to names."""
    out = {f"w.{k}": v for k, v in gen.state_tensors().items()}

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = torch.tensor(float(obj)) if isinstance(obj, (int, float)) else obj

    walk("state", gen.training_state())
    return out


# ------------------------------------------------------------------ registry
def test_registry_names_and_aliases():
    assert {"cdcgan", "stylegan2-ada"} <= set(list_generators())
    assert create_generator("mcgan").name == "cdcgan"
    assert create_generator("StyleGAN2").name == "stylegan2-ada"
    with pytest.raises(ConfigError, match="unknown generator"):
        create_generator("vae")
    with pytest.raises(ConfigError, match="unknown option"):
        create_generator("cdcgan", widht=8)
    with pytest.raises(ConfigError, match="unknown preset"):
        create_generator("stylegan2-ada", preset="huge")


def test_every_generator_implements_the_whole_protocol():
    # one protocol for all six: nothing abstract is left, and the step-wise hooks exist only on the
    # step-trained models (the GANs and the diffusion model)
    import inspect

    from oncosynth.generators import Generator, generator_class
    from oncosynth.generators.gan import SteppedGAN

    assert set(list_generators()) == {"cdcgan", "stylegan2-ada", "singan", "style-transfer", "style-transfer-gated", "ddpm"}
    for name in list_generators():
        cls = generator_class(name)
        assert issubclass(cls, Generator) and not inspect.isabstract(cls), name
        assert issubclass(cls, SteppedGAN) == (name in ("cdcgan", "stylegan2-ada", "ddpm")), name
        assert hasattr(cls, "train_step") == issubclass(cls, SteppedGAN), name


# ------------------------------------------------------------------ train, sample, save, load
@pytest.mark.parametrize("method", METHODS)
def test_train_sample_save_load(method, tmp_path):
    gen = tiny(method)
    run = tmp_path / "run"
    gen.fit(tiny_data(), run, steps=3, seed=1, checkpoint_every=2, sample_every=2, **FIT)
    assert gen.step == 3 and gen.classes == ["benign", "malignant"]

    images = gen.sample(5, "malignant", seed=7)
    assert images.shape == (5, 1, 32, 32) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and float(images.std()) > 0
    assert torch.equal(images, gen.sample(5, "malignant", seed=7))            # same seed, same images
    assert torch.allclose(images[2:3], gen.sample(1, "malignant", seed=9), atol=1e-5)  # image i: seed + i
    assert not torch.equal(images, gen.sample(5, "benign", seed=7))           # the class matters

    again = load_generator(run)
    assert type(again) is type(gen) and again.step == 3
    assert torch.equal(again.sample(5, "malignant", seed=7), images)

    config = json.loads((run / "config.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert config["kind"] == f"generator/{method}"
    assert manifest["seed"] == 1 and manifest["step"] == 3 and manifest["data_hash"]
    assert "torch" in manifest["versions"]
    assert (run / "samples" / "step-0000002.png").is_file() and (run / "samples" / "step-0000003.png").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and {"img_per_s", "eta_s", "loss_D", "loss_G"} <= set(log[0])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]


def test_rgb_and_non_power_of_two_size_is_resampled(tmp_path, caplog):
    gen = tiny("cdcgan", size=None)
    gen.fit(tiny_data(size=24, channels=3), tmp_path / "run", steps=1, **FIT)
    assert (gen.size, gen.channels) == (32, 3)
    assert gen.sample(2, "benign", seed=0).shape == (2, 3, 32, 32)
    assert "resampled to 32 px" in caplog.text


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("method", METHODS)
def test_killed_and_resumed_run_equals_uninterrupted(method, tmp_path):
    data = tiny_data()
    straight = tiny(method)
    straight.fit(data, tmp_path / "straight", steps=6, seed=3, checkpoint_every=3, **FIT)

    killed = tiny(method)
    real_step = killed.train_step

    def crash_at_5(reals, labels):
        if killed.step == 4:  # steps 1-3 done and checkpointed, step 4 done, killed during step 5
            raise KeyboardInterrupt
        return real_step(reals, labels)

    killed.train_step = crash_at_5
    with pytest.raises(KeyboardInterrupt):
        killed.fit(data, tmp_path / "resumed", steps=6, seed=3, checkpoint_every=3, **FIT)
    assert latest_checkpoint(tmp_path / "resumed").name == "step-0000003"
    assert not (tmp_path / "resumed" / "config.json").exists()   # no final model from a killed run

    resumed = load_generator(tmp_path / "resumed")                 # a new object, from the checkpoint
    assert resumed.step == 3
    resumed.fit(data, tmp_path / "resumed", steps=6, seed=3, checkpoint_every=3, **FIT)
    assert resumed.step == 6
    a, b = training_tensors(straight), training_tensors(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k])]
    assert different == []


def test_resume_refuses_other_settings_and_no_resume_refuses_existing_run(tmp_path):
    run = tmp_path / "run"
    tiny("cdcgan").fit(tiny_data(), run, steps=2, **FIT)
    before = (run / "weights.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="other settings"):
        tiny("cdcgan", width=8).fit(tiny_data(), run, steps=4, **FIT)
    with pytest.raises(ConfigError, match="already holds a training run"):
        tiny("cdcgan").fit(tiny_data(), run, steps=4, resume=False, **FIT)
    assert (run / "weights.safetensors").read_bytes() == before


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize("method", METHODS)
def test_divergence_stops_and_keeps_last_good_checkpoint(method, tmp_path):
    gen = tiny(method)
    real_step = gen.train_step

    def nan_at_5(reals, labels):
        losses = real_step(reals, labels)
        return {**losses, "loss_D": math.nan} if gen.step == 4 else losses

    gen.train_step = nan_at_5
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at step 5.*step-0000004.*kept"):
        gen.fit(tiny_data(), run, steps=8, checkpoint_every=2, **FIT)
    assert latest_checkpoint(run).name == "step-0000004"
    assert not (run / "config.json").exists()
    good = load_generator(run)
    assert all(torch.isfinite(t).all() for t in good.state_tensors().values() if t.is_floating_point())


def test_nan_weights_are_never_checkpointed(tmp_path):
    gen = tiny("cdcgan")
    real_step = gen.train_step

    def poison(reals, labels):
        losses = real_step(reals, labels)
        if gen.step == 1:  # during step 2, after its losses were computed
            with torch.no_grad():
                next(gen.G.parameters()).fill_(float("inf"))
        return losses

    gen.train_step = poison
    with pytest.raises(TrainingDiverged, match="NaN/inf weights"):
        gen.fit(tiny_data(), tmp_path / "run", steps=4, checkpoint_every=2, **FIT)
    assert latest_checkpoint(tmp_path / "run") is None


# ------------------------------------------------------------------ ADA
def test_augment_identity_at_p0_and_differentiable():
    pipe = AugmentPipe()
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    assert pipe(x) is x
    pipe.p.fill_(1.0)
    torch.manual_seed(0)
    y = pipe(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    grey = torch.rand(4, 1, 16, 16, requires_grad=True)
    pipe(grey).sum().backward()
    assert grey.grad is not None


def test_augment_flips_and_quarter_turns_are_exact_without_oversampling():
    # The released code warps even flips at 2x through a wavelet filter (tests/test_stylegan2_paper.py);
    # without that oversampling, flips and quarter turns move whole pixels.
    x = torch.rand(16, 1, 8, 8)
    torch.manual_seed(0)
    only = {k: 0 for k in AugmentPipe().weights}
    flip = AugmentPipe(**{**only, "xflip": 1}, oversample=False)
    flip.p.fill_(1.0)
    for img, out in zip(x, flip(x)):
        assert torch.allclose(out, img, atol=1e-5) or torch.allclose(out, img.flip(-1), atol=1e-5)
    turn = AugmentPipe(**{**only, "rotate90": 1}, oversample=False)
    turn.p.fill_(1.0)
    for img, out in zip(x, turn(x)):
        assert any(torch.allclose(out, torch.rot90(img, k, dims=(-2, -1)), atol=1e-5) for k in range(4))


def test_ada_p_rises_when_d_overfits_and_stays_at_zero_otherwise():
    def run(sign_of_real_logits):
        pipe = AugmentPipe()
        ada = AdaController(pipe, target=0.6, interval=4, speed_img=1000)
        history = []
        for step in range(200):
            ada.observe(sign_of_real_logits(step))
            ada.update(batch_size=8)
            history.append(float(pipe.p))
        return history, ada

    g = torch.Generator().manual_seed(0)
    overfit, ada = run(lambda step: torch.rand(8, generator=g) + 0.1)             # D sure every real is real
    assert ada.last_rt == 1.0 and overfit[-1] == 1.0 and overfit[40] > overfit[8] > 0
    healthy, ada = run(lambda step: torch.randn(8, generator=g))                  # r_t about 0
    assert abs(ada.last_rt) < 0.9 and max(healthy) <= 0.032
    mixed, _ = run(lambda step: torch.tensor([1.0] * 7 + [-1.0]))                # r_t = 0.75 > 0.6
    assert mixed[-1] > mixed[100] > 0


def test_ada_p_rises_in_a_real_run_on_four_images(tmp_path):
    # Four training images and a fast discriminator: D soon calls every real image real, so p must rise.
    gen = tiny("stylegan2-ada", ada_kimg=0.2, ada_interval=2, lr=0.01)
    gen.fit(tiny_data(n=4), tmp_path / "run", steps=32, **FIT)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["augment_p"] == 0 and max(r["augment_p"] for r in log) >= 0.08


def test_fused_and_unfused_modulated_conv_agree():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 8, 8), torch.randn(4, 5, 3, 3), torch.randn(3, 5)
    for demod in (True, False):
        fused = modulated_conv2d(x, weight, styles, demodulate=demod, fused=True)
        plain = modulated_conv2d(x, weight, styles, demodulate=demod, fused=False)
        assert torch.allclose(fused, plain, atol=1e-4)


# ------------------------------------------------------------------ bad input
def test_bad_input_errors_and_nothing_written(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="needs at least two classes"):
        tiny("cdcgan").fit(tiny_data(classes=("malignant",)), run, steps=1, **FIT)
    with pytest.raises(ConfigError, match="needs at least two classes"):
        tiny("cdcgan").fit(tiny_data(), run, steps=1, classes=["malignant"], **FIT)
    with pytest.raises(ConfigError, match="not a power of two"):
        tiny("stylegan2-ada", size=96).fit(tiny_data(), run, steps=1, **FIT)
    with pytest.raises(ConfigError, match="not a power of two"):
        tiny("cdcgan", size=16).fit(tiny_data(), run, steps=1, **FIT)
    assert not run.exists()
    with pytest.raises(ConfigError, match="tensorboard") if not _has_tensorboard() else _nothing():
        tiny("cdcgan").fit(tiny_data(), tmp_path / "tb", steps=1, tensorboard=True, **FIT)

    gen = tiny("cdcgan").fit(tiny_data(), run, steps=1, **FIT)
    with pytest.raises(ConfigError, match="unknown to this cdcgan"):
        gen.sample(1, "healthy")
    from oncosynth.generators.stylegan2 import StyleGAN2ADA

    with pytest.raises(CheckpointError, match="expected 'generator/stylegan2-ada'"):
        StyleGAN2ADA.load(run)
    with pytest.raises(CheckpointError, match="not a generator"):
        (tmp_path / "clf").mkdir()
        (tmp_path / "clf" / "config.json").write_text('{"kind": "classifier"}')
        load_generator(tmp_path / "clf")
    (run / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_generator(run)
    with pytest.raises(CheckpointError, match="no generator checkpoint"):
        load_generator(tmp_path / "empty")


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------ CLI
def _png_tree(root: Path, size: int = 32, classes=("benign", "malignant")) -> Path:
    rng = np.random.default_rng(0)
    for cls in classes:
        folder = root / "train" / cls
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"p{cls}{i}.png")
    return root


def test_cli_train_generate_and_errors(tmp_path):
    from oncosynth.cli import app

    runner = CliRunner()
    data, run, out = _png_tree(tmp_path / "data"), tmp_path / "run", tmp_path / "out"
    result = runner.invoke(app, ["train-generator", "--method", "mcgan", "--data", str(data), "--out", str(run),
                                 "--steps", "2", "--width", "4", "--batch-size", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert load_generator(run).step == 2

    result = runner.invoke(app, ["generate", str(run), "--n", "3", "--class", "malignant", "--class", "benign",
                                 "--out", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 6 and {r["class"] for r in rows} == {"benign", "malignant"}
    assert rows[0] == {"file": "cdcgan-0000005_malignant.png", "class": "malignant", "seed": "5",
                       "generator": "cdcgan", "run": str(run), "step": "2"}
    assert all((out / r["file"]).is_file() for r in rows)
    assert Image.open(out / rows[0]["file"]).size == (32, 32)
    assert len(json.loads((out / "manifest.json").read_text())["images"]) == 6

    stamp = (out / rows[0]["file"]).stat().st_mtime_ns
    again = runner.invoke(app, ["generate", str(run), "--n", "3", "--class", "malignant", "--out", str(out),
                                "--seed", "5"])
    assert again.exit_code == 0 and "wrote 0 images" in again.output  # the same command: the set is complete
    assert (out / rows[0]["file"]).stat().st_mtime_ns == stamp
    unknown = runner.invoke(app, ["generate", str(run), "--n", "1", "--class", "healthy", "--out", str(out)])
    assert isinstance(unknown.exception, ConfigError) and "healthy" in str(unknown.exception)

    one_class = _png_tree(tmp_path / "one", classes=("malignant",))
    bad = runner.invoke(app, ["train-generator", "--method", "cdcgan", "--data", str(one_class),
                              "--out", str(tmp_path / "r2"), "--steps", "1", "--width", "4"])
    assert isinstance(bad.exception, OncosynthError) and not (tmp_path / "r2").exists()
