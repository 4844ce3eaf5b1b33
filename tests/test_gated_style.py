"""Style transfer with both quality gates as a generator: what it returns passed both gates, it
round-trips through its checkpoint, a shortfall is a clear error, and every registered generator
(this one included) trains inside a study on the cell's own records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oncosynth.data import load_dataset
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.errors import ConfigError
from oncosynth.generators import create_generator, list_generators, load_generator
from oncosynth.quality.anomaly import AnomalyDetector
from oncosynth.quality.gates import AnomalyGate, ClassifierGate
from oncosynth.study import parse_config, run_study

SIZE = 32
LAYERS = ["conv_1", "conv_2", "conv_3", "conv_4"]  # random-cnn has four conv layers
GATED = {"feature_net": "random-cnn:0", "steps": 3, "content_layer": "conv_4", "style_layers": LAYERS,
         "retry_content_layers": ["conv_2", "conv_4"], "retry_steps": [3, 6], "retry_content_weights": [1.0, 10.0],
         "anomaly_epochs": 1, "anomaly_widths": [4, 8], "gate_steps": 100, "gate_batch_size": 16, "cutoff": 0.3}

pytestmark = pytest.mark.usefixtures("one_thread", "own_cache")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("phantom") / "data",
                         PhantomConfig(n=120, size=SIZE, difficulty="easy", seed=0))


@pytest.fixture(scope="module")
def fitted(phantom, tmp_path_factory):
    run = tmp_path_factory.mktemp("gated") / "run"
    gen = create_generator("style-transfer-gated", **GATED)
    gen.fit(load_dataset(phantom), run, seed=0)
    return gen, run


def test_every_sample_passed_both_gates_and_the_checkpoint_round_trips(fitted):
    gen, run = fitted
    images = gen.sample(4, "malignant", seed=3)
    assert images.shape == (4, 1, SIZE, SIZE) and 0 <= float(images.min()) and float(images.max()) <= 1
    threshold = gen.config["anomaly_threshold"]
    assert threshold is not None and json.loads((run / "manifest.json").read_text())["gates"]["fit_images"] > 0
    anomaly = AnomalyGate(AnomalyDetector(gen.autoencoder, SIZE, threshold))
    assert (anomaly.score(images) <= threshold).all()
    classifier = ClassifierGate(gen.gate, "benign", "malignant", GATED["cutoff"])
    assert (classifier.style_probability(images) >= GATED["cutoff"]).all()
    assert torch.equal(images, gen.sample(4, "malignant", seed=3))  # same (n, seed), same images

    again = load_generator(run)
    assert type(again) is type(gen) and again.config["anomaly_threshold"] == threshold
    assert torch.equal(again.sample(4, "malignant", seed=3), images)


def test_a_second_fit_with_the_same_seed_gives_the_same_generator(phantom, fitted, tmp_path):
    # an in-study generator killed during fit is fitted again from the start: it must come out the same
    gen, _ = fitted
    refit = create_generator("style-transfer-gated", **GATED).fit(load_dataset(phantom), tmp_path / "run", seed=0)
    assert refit.config["anomaly_threshold"] == gen.config["anomaly_threshold"]
    assert all(torch.equal(a, b) for a, b in zip(refit.gate.state_dict().values(), gen.gate.state_dict().values()))
    assert torch.equal(refit.sample(2, "malignant", seed=5), gen.sample(2, "malignant", seed=5))


def test_a_cutoff_no_image_can_reach_is_a_clear_error(fitted):
    strict = load_generator(fitted[1])
    strict.config.update(cutoff=1.0, max_pairs_per_image=1)
    with pytest.raises(ConfigError, match=r"only \d+ of 3 'malignant' images passed both gates after 3 pairs"):
        strict.sample(3, "malignant", seed=0)


def test_a_cutoff_outside_zero_one_is_refused_before_training(phantom, tmp_path):
    with pytest.raises(ConfigError, match="cutoff must be in"):
        create_generator("style-transfer-gated", **{**GATED, "cutoff": 0.0}).fit(load_dataset(phantom), tmp_path / "r")
    assert not (tmp_path / "r").exists()


IN_STUDY = {
    "singan": ({"iters": 3, "filters": 8, "min_size": 14, "max_size": 32, "sifid_samples": 2},
               {"class_name": "malignant", "images": 2}, None),
    "style-transfer": ({k: GATED[k] for k in ("feature_net", "steps", "content_layer", "style_layers")}, {}, None),
    "style-transfer-gated": (GATED, {}, None),
    "ddpm": ({"widths": [8, 16], "attention": [False, True], "norm_groups": 8, "head_channels": 8,
              "timesteps": 50, "sample_steps": 5, "size": 16, "batch_size": 4}, {}, 2),
}


def test_the_in_study_list_covers_every_registered_generator():
    assert set(list_generators()) == set(IN_STUDY) | {"cdcgan", "stylegan2-ada"}  # the GANs: test_study_protocol


@pytest.mark.parametrize("method", sorted(IN_STUDY))
def test_every_generator_trains_inside_a_study_on_the_cells_records(method, phantom, tmp_path):
    if method == "ddpm":
        pytest.importorskip("monai")
    options, fit, steps = IN_STUDY[method]
    arm = {"name": f"real+{method}", "kind": "real+synthetic",
           "synthetic": {"train": {"method": method, "steps": steps, "options": options, "fit": fit},
                         "count": 4, "classes": ["malignant"]}}
    config = {"name": "in-study", "data": {"path": str(phantom), "size": SIZE}, "model": {"backbone": "resnet10t"},
              "train": {"steps": 2, "eval_every": 2, "batch_size": 16, "lr": 0.003},
              "arms": [{"name": "real", "kind": "real"}, arm], "fractions": [1.0], "seeds": [0],
              "bootstrap": 100, "report_samples": 1}
    out = tmp_path / "out"
    run_study(parse_config(config), out=out, device="cpu", progress=False)
    (folder,) = (out / "generators").iterdir()
    done = json.loads((folder / "generator.json").read_text())
    assert done["method"] == method and done["n_records"] == len(load_dataset(phantom).split("train"))
    row = next(r for r in json.loads((out / "results.json").read_text())["summary"] if r["arm"] == arm["name"])
    assert row["provenance_kind"] == "in-study" and not row.get("leak_flag")
    assert np.isfinite(row["auroc_mean"])
