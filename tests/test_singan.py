"""SinGAN (one image, many per class) and SIFID: tiny sizes, a few iterations, one thread."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from oncosynth.cli import app
from oncosynth.errors import ConfigError, DataError, OncosynthError
from oncosynth.generators import create_generator, load_generator
from oncosynth.generators.singan import group as singan_group
from oncosynth.generators.singan import train as singan_train
from oncosynth.generators.singan import pyramid_sizes, sample_member, train_singan
from oncosynth.metrics.sifid import evaluate_sifid, sifid, sifid_matrix, sifid_scores
from resume_helpers import interrupt_singan_at_scale

TINY = {"iters": 3, "filters": 8, "min_size": 14, "max_size": 32, "sifid_samples": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def texture(seed: int, size: int = 24, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.sin(2 * np.pi * (3 + seed) * x) * np.cos(2 * np.pi * 2 * y)
    img = np.clip(base[..., None] + 0.1 * rng.standard_normal((size, size, channels)), 0, 1)
    return (img * 255).astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        write_png(root / "malignant" / f"m{i}.png", texture(i))
    write_png(root / "benign" / "b0.png", texture(9))
    return root


# ------------------------------------------------------------------ one SinGAN ----
def test_pyramid_sizes():
    sizes = pyramid_sizes(128, 128)
    # by hand: 0.75**5 = 0.237 > 25/128 = 0.195 > 0.75**6 = 0.178, so 6 steps of ratio (128/25)**(1/6) = 1.3125,
    # no step coarser than 1/0.75 = 1.333; each side is that geometric series rounded to whole pixels
    ratio = (128 / 25) ** (1 / 6)
    assert sizes == [(round(128 / ratio**k),) * 2 for k in range(6, -1, -1)]
    assert sizes[0] == (25, 25) and sizes[-1] == (128, 128)
    for (h0, w0), (h1, w1) in zip(sizes, sizes[1:]):  # both bounds, on both sides (rounding: +-0.5 px each)
        for a, b in ((h0, h1), (w0, w1)):
            assert (b - 0.5) / (a + 0.5) <= ratio <= (b + 0.5) / (a - 0.5)
            assert b / a <= 1 / 0.75 + 0.02
    tall = pyramid_sizes(300, 200, max_size=150)  # (150, 100): 4 steps cannot reach 25 (0.75**4 = 0.32 > 0.25)
    ratio = (100 / 25) ** (1 / 5)
    for (h0, w0), (h1, w1) in zip(tall, tall[1:]):
        assert (h1 - 0.5) / (h0 + 0.5) <= ratio <= (h1 + 0.5) / (h0 - 0.5)
        assert (w1 - 0.5) / (w0 + 0.5) <= ratio <= (w1 + 0.5) / (w0 - 0.5)
    assert pyramid_sizes(300, 200, max_size=150)[-1] == (150, 100)  # long side capped
    assert pyramid_sizes(300, 200, max_size=150)[0][1] == 25  # short side ends at min_size
    assert len(pyramid_sizes(128, 128, scale_factor=0.8)) > len(sizes)
    with pytest.raises(ConfigError, match="smaller than the coarsest scale"):
        pyramid_sizes(20, 40)


@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_singan_trains_under_anomaly_detection_and_samples(channels):
    image = torch.from_numpy(texture(1, 24, channels)).permute(2, 0, 1).float() / 255
    # anomaly mode would raise on an in-place modification of a tensor autograd needs (slow: grey only)
    with torch.autograd.set_detect_anomaly(channels == 1):
        member, info = train_singan(image, {**TINY, "iters": 2}, seed=0)
    assert [tuple(s) for s in info["sizes"]] == pyramid_sizes(24, 24, 0.75, 14, 32)
    assert member.n_scales == 3 and float(member.noise_amps[0]) == 1.0
    assert all(0 < float(a) < 1 for a in member.noise_amps[1:])
    assert all(not p.requires_grad for p in member.parameters())  # frozen: no graphs kept
    images = sample_member(member, [3, 4, 5])
    assert images.shape == (3, channels, 24, 24) and 0 <= images.min() and images.max() <= 1
    assert torch.allclose(sample_member(member, [4])[0], images[1], atol=1e-5)  # independent of the batch
    assert not torch.equal(images[0], images[1])
    for start in range(member.n_scales):
        assert sample_member(member, [7, 8], start_scale=start).shape == (2, channels, 24, 24)
    with pytest.raises(ConfigError, match="start_scale"):
        sample_member(member, [1], start_scale=3)


def test_resume_after_an_interrupted_scale_gives_the_same_weights(tmp_path, monkeypatch):
    image = torch.from_numpy(texture(2)).permute(2, 0, 1).float() / 255
    straight, _ = train_singan(image, TINY, seed=3)
    interrupt_singan_at_scale(monkeypatch, image, TINY, tmp_path, scale=2)
    assert [p.name for p in singan_train._partials(tmp_path)] == ["partial-01", "partial-02"]  # the last two
    resumed, info = train_singan(image, TINY, seed=3, state_dir=tmp_path)
    assert [s["scale"] for s in info["scales"]] == [0, 1, 2]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(ConfigError, match="other settings"):
        train_singan(image, {**TINY, "iters": 4}, seed=3, state_dir=tmp_path)


def test_bad_single_images_are_named():
    with pytest.raises(DataError, match="smaller than SinGAN's coarsest scale"):
        train_singan(torch.rand(1, 10, 10), TINY)
    with pytest.raises(DataError, match="single flat value"):
        train_singan(torch.full((1, 24, 24), 0.4), TINY)


# ---------------------------------------------------------------------- group ----
def test_group_trains_saves_loads_samples_equally_and_resumes(folder, tmp_path):
    run = tmp_path / "run"
    gen = create_generator("singan", **TINY)
    gen.fit(folder, run, class_name="malignant", images=2, seed=0, progress=False)
    assert (run / "config.json").is_file() and not list(run.glob("members/*/partial-*"))
    loaded = load_generator(run)
    assert loaded.classes == ["malignant"] and len(loaded.members) == 2 and loaded.size == 24
    images = loaded.sample(6, "malignant", seed=10)
    assert images.shape == (6, 1, 24, 24)
    for i in range(6):  # image i comes from member (seed + i) % 2, noise seeded by seed + i
        alone = loaded.sample(1, "malignant", seed=10 + i, member=(10 + i) % 2)
        assert torch.allclose(alone[0], images[i], atol=1e-6)
    assert torch.allclose(loaded.sample(6, "malignant", seed=10), gen.sample(6, "malignant", seed=10), atol=1e-6)
    rows = (run / "members.csv").read_text().splitlines()
    assert len(rows) == 3 and "random-cnn" in rows[1]
    sources = [m["source"] for m in loaded.member_info]
    assert all("malignant" in s for s in sources) and len(set(sources)) == 2

    # a re-run trains nothing; a lost member (and group marker) is trained again alone
    again = create_generator("singan", **TINY).fit(folder, run, class_name="malignant", images=2, seed=0,
                                                   progress=False)
    assert torch.allclose(again.sample(2, "malignant"), loaded.sample(2, "malignant"), atol=1e-6)
    before = (run / "members" / "member-00" / "summary.json").read_text()
    (run / "config.json").unlink()
    shutil.rmtree(run / "members" / "member-01")
    create_generator("singan", **TINY).fit(folder, run, class_name="malignant", images=2, seed=0, progress=False)
    assert (run / "members" / "member-00" / "summary.json").read_text() == before
    assert (run / "members" / "member-01" / "config.json").is_file() and (run / "config.json").is_file()
    with pytest.raises(ConfigError, match="other settings or images"):
        create_generator("singan", **TINY).fit(folder, run, class_name="malignant", images=3, seed=0)


def test_group_from_an_image_list_in_a_worker_process(folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("m2.png\n# a comment\nm0\n")
    run = tmp_path / "run"
    gen = create_generator("singan", **{**TINY, "sifid_net": None})
    gen.fit(folder, run, class_name="malignant", image_list=listing, workers=1, threads=1,
            progress=False)
    assert [Path(m["source"]).name for m in gen.member_info] == ["m2.png", "m0.png"]
    assert load_generator(run).sample(2, "malignant").shape == (2, 1, 24, 24)
    listing.write_text("m7.png\n")
    with pytest.raises(ConfigError, match="not training images of class 'malignant'"):
        create_generator("singan", **TINY).fit(folder, tmp_path / "r2", class_name="malignant", image_list=listing)


def test_bad_group_input_fails_before_anything_is_written(folder, tmp_path):
    def fit(data, out, **options):
        create_generator("singan", **TINY).fit(data, out, progress=False, **options)

    with pytest.raises(ConfigError, match="has 3 training image\\(s\\), fewer than --images 4"):
        fit(folder, tmp_path / "a", class_name="malignant", images=4)
    assert not (tmp_path / "a").exists()
    write_png(folder / "malignant" / "m9.png", np.full((24, 24, 1), 90, np.uint8))
    listing = tmp_path / "flat.txt"
    listing.write_text("m0.png\nm9.png\n")
    with pytest.raises(DataError, match="m9.png: the image has a single flat value"):
        fit(folder, tmp_path / "b", class_name="malignant", image_list=listing)
    assert not (tmp_path / "b").exists()
    write_png(folder / "malignant" / "m8.png", texture(8, 10))
    listing.write_text("m8.png\n")
    with pytest.raises(DataError, match="m8.png: the image is 10×10 px, smaller than"):
        fit(folder, tmp_path / "c", class_name="malignant", image_list=listing)
    with pytest.raises(ConfigError, match="unknown class"):
        fit(folder, tmp_path / "d", class_name="healthy", images=1)


def test_a_failed_member_leaves_no_complete_looking_group(folder, tmp_path, monkeypatch):
    real = singan_group.train_singan

    def fail_second(image, config, seed=0, **kw):
        if seed == 1000:  # member-01
            raise RuntimeError("out of memory")
        return real(image, config, seed=seed, **kw)

    monkeypatch.setattr(singan_group, "train_singan", fail_second)
    run = tmp_path / "run"
    with pytest.raises(OncosynthError, match="1 of 2 SinGAN\\(s\\) failed: member-01 .*out of memory"):
        create_generator("singan", **TINY).fit(folder, run, class_name="malignant", images=2, progress=False)
    assert not (run / "config.json").exists() and (run / "members" / "member-00" / "config.json").is_file()
    from oncosynth.errors import CheckpointError

    with pytest.raises(CheckpointError):
        load_generator(run)


def test_group_feeds_a_study_generator_arm(tmp_path):
    from oncosynth.data.phantom import PhantomConfig, write_phantom
    from oncosynth.study import parse_config
    from oncosynth.study import inputs as study_inputs, synthetic as study_synthetic

    phantom = write_phantom(tmp_path / "phantom", PhantomConfig(n=48, size=32, difficulty="easy", seed=0))
    run = tmp_path / "group"
    create_generator("singan", **{**TINY, "sifid_net": None}).fit(phantom, run, class_name="malignant", images=2,
                                                                   progress=False)
    config = parse_config({
        "data": {"path": str(phantom), "size": 32},
        "arms": [{"name": "singan", "kind": "real+synthetic",
                  "synthetic": {"generator": str(run), "count": 6, "classes": ["malignant"]}}],
        "seeds": [0]})
    prepared = study_inputs.prepare(config, progress=False)
    real_labels = prepared.train_labels[torch.from_numpy(prepared.fraction_index[(1.0, 0)])]
    images, labels = study_synthetic.synthetic_for_cell(prepared, config.arms[0], real_labels, 0, 32, 1)
    assert images.shape == (6, 1, 32, 32) and labels.tolist() == [prepared.classes.index("malignant")] * 6


# ----------------------------------------------------------------------- SIFID ----
def test_sifid_identical_is_zero_and_shuffled_is_larger():
    image = torch.from_numpy(texture(4, 48)).permute(2, 0, 1).float() / 255
    shuffled = image.flatten()[torch.randperm(image.numel(), generator=torch.Generator().manual_seed(0))]
    shuffled = shuffled.view_as(image)
    same = sifid(image, image)
    assert same == pytest.approx(0.0, abs=1e-6)
    assert sifid(image, shuffled) > 100 * max(same, 1e-9) and sifid(image, shuffled) > 1e-4
    nudged = (image + 0.01 * torch.randn_like(image)).clamp(0, 1)
    assert sifid(image, nudged) < sifid(image, shuffled)
    scores = sifid_scores(image, torch.stack([image, shuffled]))
    assert scores["n"] == 2 and scores["scores"][0] < scores["scores"][1] and "random-cnn" in scores["feature_net"]
    matrix, _ = sifid_matrix(torch.stack([image, shuffled]), torch.stack([image, shuffled]))
    assert matrix.shape == (2, 2) and matrix[0, 0] < matrix[0, 1] and matrix[1, 1] < matrix[1, 0]


def test_evaluate_sifid_cli(folder, tmp_path):
    fakes = tmp_path / "fakes"
    write_png(fakes / "singan-0000000_malignant.png", texture(0))
    write_png(fakes / "singan-0000001_malignant.png", texture(5))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--sifid", "--real", str(folder / "malignant" / "m0.png"),
                                      "--synthetic", str(fakes), "--out", str(out), "--feature-net", "random-cnn:0",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "sifid.json").read_text())
    scores = [row["sifid_nearest"] for row in data["per_synthetic"]]
    assert scores[0] == pytest.approx(0.0, abs=1e-6) and scores[1] > scores[0]
    assert len((out / "sifid.csv").read_text().splitlines()) == 3
    many = evaluate_sifid(folder, fakes, out=None)
    assert many["n_real"] == 4 and len(many["per_real"]) == 4
    bad = CliRunner().invoke(app, ["evaluate", "--sifid", "--real", str(folder), "--synthetic", str(fakes),
                                   "--out", str(out), "--train", str(folder)])
    assert bad.exit_code != 0


# ------------------------------------------------------------------------- CLI ----
def test_cli_train_generate_and_misplaced_options(folder, tmp_path):
    from oncosynth.cli import main  # noqa: F401  (the entry point prints OncosynthError as one line)

    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["train-generator", "--method", "singan", "--data", str(folder), "--out", str(run),
                                 "--class", "malignant", "--images", "1", "--preset", "tiny", "--iters", "3",
                                 "--max-size", "32", "--min-size", "14", "--sifid-net", "none", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "samples"
    result = runner.invoke(app, ["generate", str(run), "--n", "3", "--class", "malignant", "--out", str(out),
                                 "--start-scale", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("singan-*_malignant.png"))) == 3
    for args in (["--method", "singan", "--steps", "10"], ["--method", "cdcgan", "--images", "2"],
                 ["--method", "singan", "--distributed"], ["--method", "cdcgan", "--executor", "ray"]):
        result = runner.invoke(app, ["train-generator", *args, "--data", str(folder), "--out", str(tmp_path / "x")])
        assert result.exit_code != 0 and "do not apply to --method" in str(result.exception)
    assert not (tmp_path / "x").exists()
