"""DDPM generator: training, bitwise resume, sampling, bad input, and the memorisation guard.

A tiny U-Net (widths 8/16, 50 diffusion steps, 5 DDIM steps) at 16-32 px, a few steps, on CPU.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.generators import create_generator, generator_class, latest_checkpoint, load_generator
from oncosynth.generators.export import write_samples

pytest.importorskip("monai", reason="the ddpm generator needs MONAI")

TINY = {"widths": [8, 16], "attention": [False, True], "norm_groups": 8, "head_channels": 8,
        "timesteps": 50, "sample_steps": 5, "size": 16}
FIT = {"batch_size": 4, "progress": False, "log_every": 1}


@pytest.fixture(autouse=True)
def _one_thread_and_cache_in_tmp(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(threads)


def tiny_data(n: int = 12, size: int = 16, channels: int = 1):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, channels, size, size, generator=g) * 255).to(torch.uint8)
    return images, torch.arange(n) % 2, ["benign", "malignant"]


def tiny(**extra):
    return create_generator("ddpm", **{**TINY, **extra})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained 4 steps (v-prediction, cosine schedule), saved to a run folder."""
    run = tmp_path_factory.mktemp("ddpm") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tiny().fit(tiny_data(), run, steps=4, seed=1, checkpoint_every=2, sample_every=4, **FIT)
    torch.set_num_threads(threads)
    return run


def all_tensors(gen) -> dict[str, torch.Tensor]:
    out = dict(gen.state_tensors())
    for i, (key, value) in enumerate(gen.opt.state_dict()["state"].items()):
        for name, tensor in value.items():
            out[f"opt.{key}.{name}"] = torch.as_tensor(tensor)
    return out


# ------------------------------------------------------------------ training
def test_registered_trains_and_writes_the_run(trained):
    assert generator_class("diffusion").name == "ddpm"
    for path in ("weights.safetensors", "config.json", "manifest.json", "log.jsonl", "samples/step-0000004.png"):
        assert (trained / path).is_file(), path
    gen = load_generator(trained)
    assert gen.step == 4 and gen.classes == ["benign", "malignant"] and gen.size == 16
    assert set(gen.networks()) == {"unet", "ema"}
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)
    # EMA lags the trained weights (decay warm-up: 1/10 then 2/11, ... of the old value kept)
    unet, ema = gen.unet.state_dict(), gen.ema.state_dict()
    assert any(not torch.equal(unet[k], ema[k]) for k in unet if unet[k].is_floating_point())


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    data = tiny_data()
    straight = tiny(prediction="epsilon", schedule="linear")
    straight.fit(data, tmp_path / "straight", steps=4, seed=3, checkpoint_every=2, **FIT)

    killed = tiny(prediction="epsilon", schedule="linear")
    real_step = killed.train_step

    def crash_at_4(reals, labels):
        if killed.step == 3:  # steps 1-2 checkpointed, step 3 done, killed during step 4
            raise KeyboardInterrupt
        return real_step(reals, labels)

    killed.train_step = crash_at_4
    with pytest.raises(KeyboardInterrupt):
        killed.fit(data, tmp_path / "resumed", steps=4, seed=3, checkpoint_every=2, **FIT)
    assert latest_checkpoint(tmp_path / "resumed").name == "step-0000002"
    resumed = load_generator(tmp_path / "resumed")
    resumed.fit(data, tmp_path / "resumed", steps=4, seed=3, checkpoint_every=2, **FIT)
    a, b = all_tensors(straight), all_tensors(resumed)
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from oncosynth.generators.training import TrainingDiverged

    gen = tiny()
    real_step = gen.train_step

    def poisoned_at_3(reals, labels):
        if gen.step == 2:  # a weight goes NaN: the real step's loss is then NaN
            with torch.no_grad():
                next(gen.unet.parameters()).view(-1)[0] = float("nan")
        return real_step(reals, labels)

    gen.train_step = poisoned_at_3
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at step 3.*step-0000002.*kept"):
        gen.fit(tiny_data(), run, steps=6, checkpoint_every=2, **FIT)
    assert latest_checkpoint(run).name == "step-0000002" and not (run / "config.json").exists()


# ------------------------------------------------------------------ sampling
def test_sampling_is_seeded_per_image_and_takes_guidance_and_steps(trained):
    gen = load_generator(trained)
    four = gen.sample(4, "malignant", seed=10, batch_size=3)
    assert four.shape == (4, 1, 16, 16) and 0 <= float(four.min()) and float(four.max()) <= 1
    # image i <- seed + i: the same noise; the same pixels up to rounding, because a batch of 3 and a
    # batch of 1 may take different CPU kernels (bitwise equal on one Intel VM, not on an AMD EPYC one)
    assert torch.allclose(four[2:3], gen.sample(1, "malignant", seed=12), atol=1e-4)
    assert not torch.allclose(four[2:3], four[1:2], atol=1e-2)              # ... and other seeds differ
    assert not torch.equal(four[0], gen.sample(1, "benign", seed=10)[0])    # the class matters
    plain = gen.sample(2, "benign", seed=0, guidance=1.0, steps=2)
    assert not torch.equal(plain, gen.sample(2, "benign", seed=0, guidance=3.0, steps=2))
    assert not torch.equal(plain, gen.sample(2, "benign", seed=0, guidance=1.0, steps=3))
    assert gen.sample(1, "benign", guidance=0.0, steps=50).shape == (1, 1, 16, 16)  # DDIM steps = T is allowed


def test_rgb_patch_and_larger_sizes_build(tmp_path):
    gen = tiny(size=32, patch=2)
    gen.fit(tiny_data(size=32, channels=3), tmp_path / "run", steps=1, **FIT)
    assert (gen.channels, gen.size) == (3, 32)
    assert gen.sample(1, "benign", steps=2).shape == (1, 3, 32, 32)
    cpu = create_generator("ddpm", preset="cpu")
    cpu.check_size(64), cpu.check_size(128)
    create_generator("ddpm", preset="paper").check_size(128)


def test_refine_starts_as_the_unrefined_model_then_learns_and_old_runs_load_without_it(trained, tmp_path):
    """``refine`` adds full-resolution convolutions after the pixel shuffle (against the 2-pixel grid
    of patch 2); its last layer starts at zero, so the first prediction is the plain model's."""
    from oncosynth.generators.ddpm import Denoiser

    torch.manual_seed(0)
    plain = Denoiser(1, 2, [8, 16], [False, True], 1, 8, 8, patch=2)
    torch.manual_seed(0)
    refined = Denoiser(1, 2, [8, 16], [False, True], 1, 8, 8, patch=2, refine=8)
    x, t, labels = torch.randn(2, 1, 16, 16), torch.tensor([3, 40]), torch.tensor([0, 2])
    assert torch.equal(plain(x, t, labels), refined(x, t, labels))
    gen = tiny(size=16, patch=2, refine=8)
    gen.fit(tiny_data(), tmp_path / "run", steps=2, seed=1, **FIT)
    assert gen.unet.refine[-1].weight.abs().sum() > 0  # it trains
    again = load_generator(tmp_path / "run")
    assert again.config["refine"] == 8 and again.unet.refine is not None
    before = shutil.copytree(trained, tmp_path / "saved-before-refine")  # a run saved before the option existed
    config = json.loads((before / "config.json").read_text())
    del config["config"]["refine"]
    (before / "config.json").write_text(json.dumps(config))
    old = load_generator(before)
    assert old.config["refine"] == 0 and old.unet.refine is None
    assert torch.equal(old.sample(1, "benign", seed=2), load_generator(trained).sample(1, "benign", seed=2))
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="refine"):
            tiny(refine=bad)


def test_notch_removes_a_planted_checkerboard_and_keeps_smooth_images():
    from oncosynth.generators.filters import nyquist_notch
    from oncosynth.metrics.artefacts import period2_amplitude

    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    smooth = (0.5 + 0.3 * torch.sin(rows / 5.0) * torch.cos(cols / 7.0)).expand(2, 1, 32, 32)
    checker = (1 - 2 * ((rows + cols) % 2)).float() * 0.05
    stripes = (1 - 2 * (cols % 2)).float() * 0.05
    for pattern in (checker, stripes):
        dirty = smooth + pattern
        assert period2_amplitude(dirty) > 10
        # a linear filter that takes the pattern out exactly; what is left is the smooth image's own
        # response (reflected borders), 0.18 grey levels against the pattern's 12.75
        assert torch.allclose(nyquist_notch(dirty, 2.5), nyquist_notch(smooth, 2.5), atol=1e-5)
        assert period2_amplitude(nyquist_notch(dirty, 2.5)) < 0.25
        assert (nyquist_notch(dirty, 2.5) - smooth).abs().mean() < 0.01  # the smooth image comes back
    assert (nyquist_notch(smooth, 2.5) - smooth).abs().max() < 0.01
    with pytest.raises(ValueError, match="sigma"):
        nyquist_notch(smooth, 0)


def test_notch_is_a_sampling_option_off_by_default(trained, tmp_path):
    gen = load_generator(trained)
    assert gen.config["notch"] == 0.0
    plain = gen.sample(2, "benign", seed=3)
    notched = gen.sample(2, "benign", seed=3, notch=1.5)
    assert notched.shape == plain.shape and not torch.allclose(notched, plain, atol=1e-3)
    assert torch.allclose(gen.sample(1, "benign", seed=4, notch=1.5), notched[1:2], atol=1e-4)  # per-image seeds
    for bad in (-1, True, "wide", 9):
        with pytest.raises(ConfigError, match="notch"):
            gen.sample(1, "benign", notch=bad)
    with pytest.raises(ConfigError, match="needs images larger"):
        gen.sample(1, "benign", notch=6)  # a 37-px window on 16 px images
    cli = CliRunner().invoke(__import__("oncosynth.cli", fromlist=["app"]).app,
                             ["generate", str(trained), "--n", "1", "--out", str(tmp_path / "out"),
                              "--class", "benign", "--notch", "1.5"])
    assert cli.exit_code == 0, cli.output
    with pytest.raises(ConfigError, match="notch"):
        tiny(notch=-0.5)


def test_ddim_grid_matches_monai_step():
    # each DDIM step must land on the next timestep it evaluates (step() moves back by T//S)
    gen = tiny(timesteps=1000)
    for steps in (1, 7, 50, 600, 1000):
        grid = gen._ddim(steps).timesteps
        assert len(grid) == steps and int(grid[-1]) == 0
        assert (grid[:-1] - grid[1:] == 1000 // steps).all()


# ------------------------------------------------------------------ bad input
def test_bad_sampling_settings_and_classes(trained):
    gen = load_generator(trained)
    with pytest.raises(ConfigError, match="class 'normal' is unknown"):
        gen.sample(1, "normal")
    with pytest.raises(ConfigError, match="guidance scale must be >= 0"):
        gen.sample(1, "benign", guidance=-0.5)
    with pytest.raises(ConfigError, match="DDIM steps must be between 1 and the model's 50"):
        gen.sample(1, "benign", steps=51)
    with pytest.raises(ConfigError, match="label_dropout 0"):
        tiny(label_dropout=0.0, guidance=2.0)
    for bad, message in [({"schedule": "quadratic"}, "unknown schedule"), ({"prediction": "x"}, "unknown prediction"),
                         ({"attention": [True]}, "one flag per U-Net level"), ({"patch": 3}, "patch must be"),
                         ({"widths": [12, 16]}, "not divisible by norm_groups")]:
        with pytest.raises(ConfigError, match=message):
            tiny(**bad)


def test_size_the_unet_cannot_halve_fails_before_anything_is_written(tmp_path):
    gen = tiny(size=18, widths=[8, 16, 16], attention=[False, False, False])  # two halvings: 18 -> 9 -> 4.5
    with pytest.raises(ConfigError, match="cannot be downsampled evenly"):
        gen.fit(tiny_data(size=18), tmp_path / "run", steps=1, **FIT)
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_method_is_refused(trained, tmp_path):
    with pytest.raises(CheckpointError, match="generator/ddpm"):
        generator_class("cdcgan").load(trained)


def test_cli_generate_errors_are_one_line_and_write_nothing(trained, tmp_path, monkeypatch, capsys):
    from oncosynth.cli import app, main

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    runner = CliRunner()
    for extra, message in [(["--class", "normal"], "unknown"), (["--class", "benign", "--guidance", "-1"], "guidance"),
                           (["--class", "benign", "--ddim-steps", "60"], "DDIM steps")]:
        result = runner.invoke(app, ["generate", str(trained), "--n", "2", "--out", str(out), *extra])
        assert isinstance(result.exception, ConfigError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # through main(): one line on stderr, exit status 2
    monkeypatch.setattr("sys.argv", ["oncosynth", "generate", str(trained), "--n", "1", "--out", str(out),
                                     "--class", "benign", "--guidance", "-1"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "guidance" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    result = runner.invoke(app, ["generate", str(trained), "--n", "1", "--out", str(out), "--class", "benign",
                                 "--notch", "-1"])
    assert isinstance(result.exception, ConfigError) and "notch" in str(result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    result = runner.invoke(app, ["generate", str(trained), "--n", "2", "--out", str(out), "--class", "malignant",
                                 "--guidance", "1.5", "--ddim-steps", "3", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert (out / "ddpm-0000008_malignant.png").is_file()


# ------------------------------------------------------------------ memorisation guard
@pytest.fixture(scope="module")
def phantom_train(tmp_path_factory):
    from oncosynth.data.phantom import PhantomConfig, write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom") / "data", PhantomConfig(n=48, size=32, seed=0))


def test_pixel_copy_check_flags_what_memorisation_flags(phantom_train):
    from oncosynth.data import load_dataset, load_images
    from oncosynth.metrics.memorisation import PixelCopyCheck, memorisation

    train = load_dataset(phantom_train).split("train")
    pixels, patients = load_images(train), [r.patient for r in train.records]
    queries = torch.cat([pixels[:3], torch.rand(5, 1, 32, 32), pixels[3:4].flip(-1)])
    flagged, ratio, nearest = PixelCopyCheck(pixels, patients).check(queries)
    reference = memorisation(queries, pixels, patients)
    assert np.array_equal(flagged, reference["flagged"]) and np.allclose(ratio, reference["ratios"][:, 0])
    assert flagged[:3].all() and list(nearest[:3]) == [0, 1, 2] and not flagged[3:8].any()


def test_reject_memorised_replaces_a_planted_copy_and_records_it(trained, phantom_train, tmp_path, monkeypatch):
    from oncosynth.data import load_dataset, load_images
    from oncosynth.generators.ddpm import DDPM

    train = load_dataset(phantom_train).split("train")
    planted = load_images(train.subset(train.records[5:6]), size=16)
    real_sample = DDPM.sample

    def sample_with_a_copy(self, n, class_name, seed=0, batch_size=64, guidance=None, steps=None):
        images = real_sample(self, n, class_name, seed=seed, batch_size=batch_size, guidance=guidance, steps=steps)
        if seed <= 2 < seed + n and class_name == "malignant":  # the image of seed 2 is a training image
            images[2 - seed] = planted[0]
        return images

    monkeypatch.setattr(DDPM, "sample", sample_with_a_copy)
    out = tmp_path / "out"
    rows = write_samples(trained, out, 4, ["malignant", "benign"], seed=0, batch_size=3,
                         reject_memorised=phantom_train, steps=2)
    files = sorted(r["file"] for r in rows)
    assert len(rows) == 8 and "ddpm-0000002_malignant.png" not in files
    assert "ddpm-0000004_malignant.png" in files and "ddpm-0000002_benign.png" in files  # first spare seed: seed + n
    assert sorted(p.name for p in out.glob("*.png")) == files
    guard = json.loads((out / "manifest.json").read_text())["memorisation_guard"]
    assert len(guard) == 1 and guard[0]["n_rejected"] == 1
    rejected = guard[0]["rejected"][0]
    assert (rejected["class"], rejected["seed"]) == ("malignant", 2)
    assert rejected["nearest_train"] == train.records[5].uid and rejected["pixel_ratio"] < guard[0]["cutoff"]

    # a second run into the same folder keeps the first run's record
    write_samples(trained, out, 1, ["benign"], seed=100, reject_memorised=phantom_train, steps=2)
    assert len(json.loads((out / "manifest.json").read_text())["memorisation_guard"]) == 2
    shutil.rmtree(out)


def test_cli_trains_ddpm_with_set_options(phantom_train, tmp_path):
    from oncosynth.cli import app

    runner = CliRunner()
    sets = [item for key, value in TINY.items() if key != "size"
            for item in ("--option", f"{key}={json.dumps(value)}")] + ["--option", "schedule=linear"]
    run = tmp_path / "run"
    result = runner.invoke(app, ["train-generator", "--method", "diffusion", "--data", str(phantom_train),
                                 "--out", str(run), "--steps", "2", "--batch-size", "4", "--device", "cpu",
                                 "--sample-every", "0", *sets])
    assert result.exit_code == 0, result.output
    gen = load_generator(run)
    assert (gen.name, gen.step, gen.size, gen.config["schedule"], gen.config["widths"]) == ("ddpm", 2, 32, "linear", [8, 16])
    bad = runner.invoke(app, ["train-generator", "--method", "ddpm", "--data", str(phantom_train),
                              "--out", str(tmp_path / "r2"), "--steps", "1", "--option", "depth=3"])
    assert isinstance(bad.exception, ConfigError) and "unknown option(s) ['depth']" in str(bad.exception)
    assert not (tmp_path / "r2").exists()


def test_a_trained_run_is_a_study_synthetic_source(phantom_train, tmp_path):
    from oncosynth.data import load_dataset
    from oncosynth.study import parse_config
    from oncosynth.study import inputs as study_inputs
    from oncosynth.study import synthetic as study_synthetic

    run = tmp_path / "run"
    tiny(size=None).fit(load_dataset(phantom_train), run, steps=2, **FIT)
    config = parse_config({"data": {"path": str(phantom_train), "size": 32},
                           "arms": [{"name": "ddpm", "kind": "real+synthetic",
                                     "synthetic": {"generator": str(run), "count": 6}}],
                           "seeds": [0]})
    prepared = study_inputs.prepare(config, progress=False)
    real_labels = prepared.train_labels[torch.from_numpy(prepared.fraction_index[(1.0, 0)])]
    images, labels = study_synthetic.synthetic_for_cell(prepared, config.arms[0], real_labels, 0, 32, 1)
    assert images.shape == (6, 1, 32, 32) and images.dtype == torch.uint8
    assert sorted(set(labels.tolist())) == [0, 1] and float(images.float().std()) > 0
    # an arm's `sample` options reach the generator (here: plain conditional, 3 DDIM steps)
    config.arms[0].synthetic.sample = {"guidance": 1.0, "steps": 3}
    other, _ = study_synthetic.synthetic_for_cell(prepared, config.arms[0], real_labels, 0, 32, 1)
    assert other.shape == images.shape and not torch.equal(other, images)


def test_bad_study_sample_options_fail_before_any_training(phantom_train, tmp_path):
    from oncosynth.study import parse_config
    from oncosynth.study import inputs as study_inputs

    def arm(synthetic):
        return {"data": {"path": str(phantom_train), "size": 32}, "seeds": [0],
                "arms": [{"name": "ddpm", "kind": "real+synthetic", "synthetic": synthetic}]}

    train = {"method": "ddpm", "steps": 2, "options": {**TINY, "size": 32, "patch": 2}}
    for sample, message in [({"guidance": -1}, "guidance scale must be >= 0"), ({"steps": 51}, "DDIM steps"),
                            ({"temperature": 0.5}, "does not take sampling option"),
                            ({"seed": 3}, "does not take sampling option")]:
        config = parse_config(arm({"train": train, "ratio": 1.0, "sample": sample}))
        with pytest.raises(ConfigError, match=message):
            study_inputs.prepare(config, progress=False)
    config = parse_config(arm({"train": train, "ratio": 1.0, "sample": {"notch": 2.5, "guidance": 3}}))
    assert config.arms[0].synthetic.sample == {"notch": 2.5, "guidance": 3}
    with pytest.raises(ConfigError, match="a folder's images are already made"):
        parse_config(arm({"folder": str(phantom_train), "sample": {"guidance": 2}}))


def test_training_into_another_methods_run_is_refused(tmp_path):
    run = tmp_path / "run"
    create_generator("cdcgan", width=4, size=32).fit(tiny_data(size=32), run, steps=2, **FIT)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="generator/cdcgan.*generator/ddpm|generator/ddpm.*generator/cdcgan"):
        tiny(size=32).fit(tiny_data(size=32), run, steps=4, **FIT)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
