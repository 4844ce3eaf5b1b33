"""The study protocol end to end on the phantom: equal step budgets, in-study generators, leak flags,
hierarchical statistics in results.json and report.html."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oncosynth.data import load_dataset
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.study import parse_config, run_study
from oncosynth.study import inputs
from oncosynth.study.provenance import LeakError, describe_records
from oncosynth.study.page import _budget_note

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread", "own_cache")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("phantom") / "data",
                         PhantomConfig(n=120, size=SIZE, difficulty="easy", seed=0))


def _synthetic_folder(root: Path, phantom: Path, manifest: dict | None) -> Path:
    """Peer-style synthetic images (another phantom), optionally with a manifest of what 'made' them."""
    source = write_phantom(root / "source", PhantomConfig(n=40, size=SIZE, difficulty="easy", seed=7))
    folder = root / "images"
    folder.mkdir(parents=True)
    for i, path in enumerate(sorted(source.glob("*/*/*.png"))):
        shutil.copy(path, folder / f"synth{i:03d}_{path.parent.name}.png")
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _config(phantom: Path, arms: list[dict], **changes) -> dict:
    config = {"name": "protocol", "data": {"path": str(phantom), "size": SIZE},
              "model": {"backbone": "resnet10t"},
              "train": {"steps": 6, "eval_every": 3, "batch_size": 16, "lr": 0.003},
              "arms": [{"name": "real", "kind": "real"}, *arms],
              "fractions": [0.5], "seeds": [0, 1], "bootstrap": 200, "report_samples": 2}
    config.update(changes)
    return config


def test_equal_steps_in_study_generator_leak_flag_and_hierarchical_rows(phantom, tmp_path):
    train = load_dataset(phantom).split("train").records
    leaky = _synthetic_folder(tmp_path / "peer", phantom, {"training_data": describe_records(train)})
    bare = _synthetic_folder(tmp_path / "bare", phantom, None)
    arms = [{"name": "peer", "kind": "real+synthetic", "synthetic": {"folder": str(leaky), "count": 30}},
            {"name": "bare", "kind": "real+synthetic", "synthetic": {"folder": str(bare), "count": 30, "mix": 0.5}},
            {"name": "own", "kind": "real+synthetic",
             "synthetic": {"train": {"method": "mcgan", "steps": 2, "options": {"width": 4, "batch_size": 8}},
                           "count": 20}}]
    out = tmp_path / "out"
    report = run_study(parse_config(_config(phantom, arms)), out=out, device="cpu", progress=False)

    cells = {p.parent.name: json.loads(p.read_text()) for p in (out / "cells").glob("*/metrics.json")}
    assert len(cells) == 8
    steps = {c["train"]["steps"] for c in cells.values()}
    assert steps == {6}  # every arm, whatever its data size, took the same optimiser steps
    for cell in cells.values():
        seen = cell["train"]["images_seen"]
        assert seen["real"] + seen["synthetic"] == 6 * 16
        assert cell["train"]["best_step"] in (3, 6) and cell["train"]["budget"] == "steps"
    assert all(c["train"]["images_seen"]["synthetic"] == 0 for c in cells.values() if c["arm"] == "real")

    # one in-study generator per (fraction, seed), trained on that cell's records
    generators = sorted((out / "generators").iterdir())
    assert len(generators) == 2 and all((g / "generator.json").is_file() for g in generators)
    own = [c for c in cells.values() if c["arm"] == "own"]
    assert {c["generator"] for c in own} == {g.name for g in generators}
    assert all(c["provenance"]["kind"] == "in-study" and c["provenance"]["outside_cell"] == 0 for c in own)
    assert all(c["provenance"]["n_images"] == c["train"]["n_real"] for c in own)

    results = json.loads((out / "results.json").read_text())["summary"]
    row = {(r["test_set"], r["arm"]): r for r in results}
    peer, unknown = row[("test", "peer")], row[("test", "bare")]
    patients_in_cell = {c["seed"]: c["provenance"] for c in cells.values() if c["arm"] == "peer"}
    assert peer["leak_flag"].startswith("saw ") and peer["leak_flag"].endswith("patients outside this cell's 50%")
    assert peer["outside_cell"] == max(p["outside_cell"] for p in patients_in_cell.values()) > 0
    assert unknown["provenance_kind"] == "unknown" and unknown["leak_flag"] == "provenance unknown"
    assert row[("test", "own")]["leak_flag"] is None
    for arm in ("peer", "bare", "own"):
        r = row[("test", arm)]
        assert {"delta_low_hier", "delta_high_hier", "p_hier", "p_holm", "per_seed_delta"} <= set(r)
        assert set(r["per_seed_delta"]) == {"0", "1"}
        assert r["p_holm"] >= r["p_hier"]
        assert r["steps_vs_reference"] == 1.0
        assert r["auroc_low_hier"] <= r["auroc_mean"] <= r["auroc_high_hier"] or r["seeds"] < 2
    html = report.read_text()
    assert "resampling the training seeds and then the test cases" in html
    assert "same 6 optimiser steps" in html and "patients outside this cell" in html
    assert "provenance unknown" in html and "trained in-study on the cell" in html

    # a second run reuses the generators and every cell
    before = {g.name: (g / "generator.json").stat().st_mtime for g in generators}
    run_study(parse_config(_config(phantom, arms)), out=out, device="cpu", progress=False)
    assert {g.name: (g / "generator.json").stat().st_mtime for g in generators} == before


def test_a_generator_that_saw_a_test_image_is_refused_before_training(phantom, tmp_path):
    dataset = load_dataset(phantom)
    seen = dataset.split("train").records + dataset.split("test").records[:2]
    folder = _synthetic_folder(tmp_path / "leaky", phantom, {"generator_manifest": {
        "training_data": describe_records(seen)}})
    config = parse_config(_config(phantom, [{"name": "leaky", "kind": "real+synthetic",
                                             "synthetic": {"folder": str(folder), "count": 10}}]))
    with pytest.raises(LeakError, match="2 image\\(s\\) of the held-out 'test' set"):
        inputs.prepare(config, progress=False)


def test_the_report_says_when_epoch_budgets_differ(phantom):
    config = parse_config(_config(phantom, [], train={"epochs": 3}))
    rows = [{"variant": "real", "fraction": 0.1, "steps_vs_reference": None},
            {"variant": "real+peer", "fraction": 0.1, "steps_vs_reference": 28.8}]
    note = _budget_note(config, rows)
    assert note.startswith("Budgets differ") and "28.80×" in note and "'real+peer' at fraction 0.1" in note
    assert _budget_note(config, rows[:1]) == "Budget: 3 epochs per arm."
