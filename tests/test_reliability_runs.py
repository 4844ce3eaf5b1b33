"""Runs after kills and damage (issue 16 items 4, 5, 9): fall back, set aside, say what changed, check --out first."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_main import run_main
from PIL import Image

from oncosynth.errors import ConfigError
from oncosynth.generators import create_generator, load_generator

FIT = {"batch_size": 4, "progress": False, "log_every": 1, "sample_every": None}


@pytest.fixture(autouse=True)
def _one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int = 8):
    images = (torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    return images, torch.arange(n) % 2, ["benign", "malignant"]


def _tiny(**extra):
    return create_generator("cdcgan", width=4, size=32, **extra)


def _weights(gen) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in gen.state_tensors().items()}


_cli = run_main  # main() in this process (tests/cli_main.py): exit status, stdout, stderr


# ------------------------------------------------------------- generator runs ----
def test_truncated_newest_checkpoint_falls_back_to_the_previous_and_log_has_no_repeats(tmp_path):
    straight = _tiny().fit(_data(), tmp_path / "straight", steps=6, checkpoint_every=2, seed=1, **FIT)
    run = tmp_path / "run"
    _tiny().fit(_data(), run, steps=4, checkpoint_every=2, seed=1, **FIT)
    newest = run / "checkpoints" / "step-0000004"
    state = newest / "train_state.pt"
    state.write_bytes(state.read_bytes()[:100])

    resumed = _tiny().fit(_data(), run, steps=6, checkpoint_every=2, seed=1, **FIT)
    assert resumed.step == 6
    for key, value in _weights(straight).items():
        assert torch.equal(value, _weights(resumed)[key]), key  # bitwise: resumed from step 2
    aside = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("damaged-")]
    assert len(aside) == 1 and aside[0].endswith("step-0000004")
    assert (run / "checkpoints" / aside[0] / "train_state.pt").stat().st_size == 100  # kept, not deleted
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_every_checkpoint_damaged_restarts_like_a_new_run(tmp_path):
    straight = _tiny().fit(_data(), tmp_path / "straight", steps=3, checkpoint_every=2, seed=1, **FIT)
    run = tmp_path / "run"
    _tiny().fit(_data(), run, steps=2, checkpoint_every=2, seed=1, **FIT)
    (run / "checkpoints" / "step-0000002" / "manifest.json").write_text("{truncated")
    again = _tiny().fit(_data(), run, steps=3, checkpoint_every=2, seed=1, **FIT)
    for key, value in _weights(straight).items():
        assert torch.equal(value, _weights(again)[key]), key


def test_changed_setting_is_named(tmp_path):
    _tiny().fit(_data(), tmp_path / "run", steps=1, **FIT)
    with pytest.raises(ConfigError, match=r"other settings \(width: 4 -> 8\)"):
        create_generator("cdcgan", width=8, size=32).fit(_data(), tmp_path / "run", steps=2, **FIT)


def test_mixed_image_sizes_say_which_size_was_chosen_and_why(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        for i, side in enumerate((16, 40, 40)):
            path = tmp_path / "data" / "train" / cls / f"{cls}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(path)
    from oncosynth.data import load_dataset

    with caplog.at_level(logging.WARNING, logger="oncosynth"):
        create_generator("cdcgan", width=4).fit(load_dataset(tmp_path / "data"), tmp_path / "run", steps=1, **FIT)
    assert "come in 2 sizes (40×40 (4), 16×16 (2))" in caplog.text
    assert "resampled to 16 px, the larger side of the first image" in caplog.text
    assert "images are 16 px; resampled to 32 px (32 px is the smallest the model builds" in caplog.text
    assert load_generator(tmp_path / "run").size == 32


# --------------------------------------------------------------------- outputs ----
def test_evaluate_and_study_refuse_an_out_that_is_a_file_before_any_work(tmp_path):
    (tmp_path / "taken").write_text("x")
    evaluated = _cli("evaluate", "--real", str(tmp_path / "nowhere"), "--synthetic", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "taken"), "--feature-net", "random-cnn:0")
    assert evaluated.returncode == 2 and "taken: --out is a file" in evaluated.stderr
    config = tmp_path / "study.yaml"
    config.write_text("name: x\ndata: {path: nowhere}\nmodel: {backbone: resnet10t}\n"
                      "arms: [{name: real, kind: real}]\nfractions: [1.0]\nseeds: [0]\n")
    studied = _cli("study", str(config), "--out", str(tmp_path / "taken" / "below"))
    assert studied.returncode == 2 and "which is a file" in studied.stderr
    assert "Traceback" not in evaluated.stderr + studied.stderr


def test_evaluate_notes_mixed_sizes_inside_the_synthetic_set(tmp_path):
    from oncosynth.metrics.evaluate import evaluate

    rng = np.random.default_rng(0)
    for role, sides in (("real", [32] * 8), ("synth", [32] * 4 + [48] * 4)):
        for i, side in enumerate(sides):
            path = tmp_path / role / "ab"[i % 2] / f"{role}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(path)
    metrics = evaluate(tmp_path / "real", tmp_path / "synth", feature_net="random-cnn:0", compute_frd=False,
                       progress=False, kid_subsets=2)
    assert any("synthetic images come in 2 sizes" in note and "resampled to 32×32" in note
               for note in metrics["notes"]), metrics["notes"]


# ----------------------------------------------------------------------- study ----
def test_damaged_cell_marker_means_not_finished(tmp_path):
    from oncosynth.data.phantom import PhantomConfig, write_phantom
    from oncosynth.study import parse_config, run_study

    data = write_phantom(tmp_path / "data", PhantomConfig(n=60, size=32, difficulty="easy", seed=0))
    config = parse_config({"name": "t", "data": {"path": str(data), "size": 16, "channels": 1},
                           "model": {"backbone": "resnet10t"}, "train": {"epochs": 1, "batch_size": 16},
                           "arms": [{"name": "real", "kind": "real"}], "fractions": [1.0], "seeds": [0],
                           "bootstrap": 100, "report_samples": 2})
    out = tmp_path / "out"
    run_study(config, out, device="cpu", progress=False)
    first = json.loads((out / "results.json").read_text())["cells"][0]
    marker = out / "cells" / first["cell"] / "metrics.json"
    marker.write_text(marker.read_text()[:40])
    run_study(config, out, device="cpu", progress=False)
    again = json.loads((out / "results.json").read_text())["cells"][0]
    assert again["metrics"] == first["metrics"]  # the cell ran again, with the same result
    aside = [p for p in marker.parent.iterdir() if p.name.startswith("damaged-")]
    assert len(aside) == 1 and aside[0].name.endswith("metrics.json") and len(aside[0].read_text()) == 40
