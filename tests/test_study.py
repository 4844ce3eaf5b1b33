"""The study: a small end-to-end grid whose statistics are recomputed independently; resume; bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve
from typer.testing import CliRunner

from oncosynth.cli import app
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.errors import ConfigError, DataError, OncosynthError
from oncosynth.study import load_config, parse_config, plan_cells, run_study
from oncosynth.study import cells as study_cells
from oncosynth.study import inputs as study_inputs
from oncosynth.study import synthetic as study_synthetic
from oncosynth.study.config import SyntheticSource
from oncosynth.study.stats import bootstrap_indices

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread", "own_cache")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    return write_phantom(root / "data", PhantomConfig(n=160, size=SIZE, difficulty="easy", seed=0))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A 'synthetic' folder in the peer's naming (label last in the file name), from another phantom seed."""
    root = tmp_path_factory.mktemp("synthetic")
    other = write_phantom(root / "source", PhantomConfig(n=60, size=SIZE, difficulty="easy", seed=7))
    folder = root / "images"
    folder.mkdir()
    for i, path in enumerate(sorted(other.glob("*/*/*.png"))):
        shutil.copy(path, folder / f"synth{i:03d}_{path.parent.name}.png")
    return folder


def study_dict(phantom: Path, synthetic: Path, **changes) -> dict:
    config = {
        "name": "test",
        "data": {"path": str(phantom), "size": SIZE, "channels": 1},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "warmup_epochs": 0.5},
        "arms": [{"name": "real", "kind": "real"},
                 {"name": "real+synthetic", "kind": "real+synthetic",
                  "synthetic": {"folder": str(synthetic), "label_from_name": True, "count": 40}}],
        "fractions": [1.0],
        "seeds": [0, 1],
        "bootstrap": 200,
        "report_samples": 4,
    }
    config.update(changes)
    return config


def read(path: Path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([r["label"] == "malignant" for r in rows], dtype=int)
    return labels, np.array([float(r["p_malignant"]) for r in rows])


def test_small_study_end_to_end_with_statistics_checked_by_hand(phantom, synthetic, tmp_path, monkeypatch):
    out = tmp_path / "study"
    report = run_study(parse_config(study_dict(phantom, synthetic)), out, device="cpu", progress=False)
    assert report == out / "report.html"
    html = report.read_text()
    assert html.count("data:image/png;base64") >= 4 and "http://" not in html and "https://" not in html
    results = json.loads((out / "results.json").read_text())
    assert (out / "results.csv").is_file() and results["manifest"]["versions"]["torch"]
    cells = {c["cell"]: c for c in results["cells"]}
    assert len(cells) == 4
    synth_cell = cells["real+synthetic__nodp__f1__s0"]
    assert synth_cell["train"]["n_synthetic"] == 40
    assert synth_cell["train"]["n_real"] == cells["real__nodp__f1__s0"]["train"]["n_real"]

    # per-cell metrics from the written predictions, with scikit-learn
    for cell in cells.values():
        folder = out / "cells" / cell["cell"]
        y_val, p_val = read(folder / "predictions_val.csv")
        fpr, tpr, thresholds = roc_curve(y_val, p_val)
        assert cell["threshold"] == pytest.approx(thresholds[np.argmax(tpr - fpr)])
        y, p = read(folder / "predictions_test.csv")
        tn, fp, fn, tp = confusion_matrix(y, p >= cell["threshold"]).ravel()
        m = cell["metrics"]["test"]
        assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
        assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert m["specificity"] == pytest.approx(tn / (tn + fp))
        assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))

    # seed summaries, bootstrap interval and paired difference, recomputed independently
    rows = {r["variant"]: r for r in results["summary"] if r["test_set"] == "test"}
    index = bootstrap_indices(len(y), 200, seed=0)

    def seed_aurocs(arm):
        return [read(out / "cells" / f"{arm}__nodp__f1__s{s}" / "predictions_test.csv") for s in (0, 1)]

    def resampled_mean(arm):
        values = []
        for row in index:
            per_seed = [roc_auc_score(yy[row], pp[row]) if 0 < yy[row].sum() < len(row) else np.nan
                        for yy, pp in seed_aurocs(arm)]
            values.append(np.mean(per_seed))
        return np.array(values)

    for arm in ("real", "real+synthetic"):
        aurocs = [roc_auc_score(yy, pp) for yy, pp in seed_aurocs(arm)]
        assert rows[arm]["auroc_mean"] == pytest.approx(np.mean(aurocs))
        assert rows[arm]["auroc_std"] == pytest.approx(np.std(aurocs, ddof=1))
        low, high = np.nanpercentile(resampled_mean(arm), [2.5, 97.5])
        assert (rows[arm]["auroc_low"], rows[arm]["auroc_high"]) == pytest.approx((low, high))
    diff = resampled_mean("real+synthetic") - resampled_mean("real")
    diff = diff[~np.isnan(diff)]
    paired = rows["real+synthetic"]
    assert paired["delta_auroc"] == pytest.approx(rows["real+synthetic"]["auroc_mean"] - rows["real"]["auroc_mean"])
    assert (paired["delta_low"], paired["delta_high"]) == pytest.approx(tuple(np.percentile(diff, [2.5, 97.5])))
    # resamples where both arms tie exactly may flip sign by float rounding between the two AUROC codes
    assert paired["p_value"] == pytest.approx(min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean())),
                                              abs=4 / len(index))
    assert "delta_auroc" not in rows["real"]

    # resume: a re-run trains nothing and reproduces the summary
    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(study_cells, "run_cell", no_training)
    run_study(parse_config(study_dict(phantom, synthetic)), out, device="cpu", progress=False)
    again = json.loads((out / "results.json").read_text())
    assert again["summary"] == results["summary"]
    changed = study_dict(phantom, synthetic)
    changed["train"]["lr"] = 0.01
    with pytest.raises(ConfigError, match="other settings"):
        run_study(parse_config(changed), out, device="cpu", progress=False)


def test_plan_covers_arms_epsilons_fractions_and_seeds(phantom, synthetic):
    config = parse_config(study_dict(phantom, synthetic, fractions=[0.5, 1.0], seeds=[0, 1, 2],
                                     dp={"epsilons": [1, 6]},
                                     arms=[{"name": "real", "kind": "real", "dp": "both"},
                                           {"name": "over", "kind": "real+oversample"}]))
    cells = plan_cells(config)
    assert len(cells) == (3 + 1) * 2 * 3
    assert {c.variant for c in cells} == {"real", "real (DP ε=1)", "real (DP ε=6)", "over"}


def test_synthetic_counts_balance_count_and_ratio():
    classes = ["benign", "malignant"]
    real = np.array([30, 10])
    balance = SyntheticSource(folder=Path("x"), balance=True)
    assert study_synthetic.synthetic_counts(balance, real, classes, None).tolist() == [0, 20]
    only_malignant = SyntheticSource(folder=Path("x"), count=15, classes=["malignant"])
    assert study_synthetic.synthetic_counts(only_malignant, real, classes, np.array([50, 50])).tolist() == [0, 15]
    ratio = SyntheticSource(folder=Path("x"), ratio=0.5)
    assert study_synthetic.synthetic_counts(ratio, real, classes, np.array([50, 3])).tolist() == [10, 3]  # capped


def test_generator_arm_uses_the_generator_contract(phantom, tmp_path, monkeypatch):
    class StubGenerator:
        classes = ["benign", "malignant"]

        def sample(self, n, class_name, seed):
            return torch.full((n, 1, 48, 48), 0.25 if class_name == "benign" else 0.75)

    import oncosynth.generators as generators

    monkeypatch.setattr(generators, "load_generator", lambda folder, device="cpu": StubGenerator())
    config = parse_config({
        "data": {"path": str(phantom), "size": SIZE},
        "arms": [{"name": "gen", "kind": "real+synthetic",
                  "synthetic": {"generator": str(tmp_path), "count": 10, "classes": ["malignant"]}}],
        "seeds": [0]})
    prepared = study_inputs.prepare(config, progress=False)
    real_labels = prepared.train_labels[torch.from_numpy(prepared.fraction_index[(1.0, 0)])]
    images, labels = study_synthetic.synthetic_for_cell(prepared, config.arms[0], real_labels, 0, SIZE, 1)
    assert labels.tolist() == [1] * 10  # only malignant, as configured
    assert images.shape == (10, 1, SIZE, SIZE) and images.dtype == torch.uint8  # resized 48 -> 32
    assert int(images[0, 0, 0, 0]) == round(0.75 * 255)


def test_bad_input_fails_before_training(phantom, synthetic, tmp_path):
    def expect(error, match, **changes):
        with pytest.raises(error, match=match):
            study_inputs.prepare(parse_config(study_dict(phantom, synthetic, **changes)), progress=False)

    with pytest.raises(ConfigError, match="colour"):
        parse_config(study_dict(phantom, synthetic, colour=True))  # unknown key
    with pytest.raises(ConfigError, match="train.epoch"):
        parse_config(study_dict(phantom, synthetic, train={"epoch": 3}))
    expect(DataError, "no such file", data={"path": str(tmp_path / "nowhere"), "size": SIZE})

    unparseable = tmp_path / "unparseable"
    unparseable.mkdir()
    shutil.copy(next(synthetic.glob("*.png")), unparseable / "nolabel.png")
    arm = {"name": "s", "kind": "real+synthetic", "synthetic": {"folder": str(unparseable)}}
    expect(DataError, "cannot parse a class", arms=[arm])

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(next(synthetic.glob("*.png")), foreign / "img_healthy.png")
    arm = {"name": "s", "kind": "real+synthetic", "synthetic": {"folder": str(foreign)}}
    expect(ConfigError, "'healthy'", arms=[arm])
    arm = {"name": "s", "kind": "real+synthetic", "synthetic": {"folder": str(synthetic), "classes": ["cyst"]}}
    expect(ConfigError, "'cyst'", arms=[arm])

    lopsided = tmp_path / "lopsided"  # no malignant image in the training split
    shutil.copytree(phantom, lopsided, ignore=shutil.ignore_patterns("patients.csv", "manifest.json"))
    shutil.rmtree(lopsided / "train" / "malignant")
    (lopsided / "train" / "malignant").mkdir()
    shutil.copy(next((lopsided / "train" / "benign").glob("*.png")), lopsided / "train" / "malignant" / "x.png")
    (lopsided / "train" / "malignant" / "x.png").unlink()
    with pytest.raises(OncosynthError, match="malignant"):
        study_inputs.prepare(parse_config(study_dict(lopsided, synthetic)), progress=False)


def test_cli_reports_config_errors_with_exit_code_2(phantom, synthetic, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_dict(phantom, synthetic, seedz=[1])))
    from oncosynth.cli import main  # noqa: F401 - main() maps OncosynthError to exit 2

    result = CliRunner().invoke(app, ["study", str(path), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, ConfigError) and "seedz" in str(result.exception)
    relative = tmp_path / "rel.yaml"
    relative.write_text(yaml.safe_dump(study_dict(Path("data"), synthetic)))
    assert load_config(relative).data.path == (tmp_path / "data").resolve()


def test_synthetic_only_and_pretrain_finetune_arms_with_an_external_test_set(phantom, synthetic, tmp_path):
    """The two arms that train on synthetic images first or only, scored on the main and an external test."""
    external = write_phantom(tmp_path / "hospital-b", PhantomConfig(n=60, size=SIZE, difficulty="easy", seed=11))
    config = parse_config(study_dict(
        phantom, synthetic,
        arms=[{"name": "real", "kind": "real"},
              {"name": "synthetic-only", "kind": "synthetic-only",
               "synthetic": {"folder": str(synthetic), "label_from_name": True}},
              {"name": "pretrain", "kind": "synthetic-pretrain+real-finetune", "pretrain_epochs": 1,
               "synthetic": {"folder": str(synthetic), "label_from_name": True}}],
        external_tests=[{"name": "hospital-b", "path": str(external), "split": None}],
        seeds=[0]))
    run_study(config, tmp_path / "out", device="cpu", progress=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())

    cells = {c["arm"]: c for c in results["cells"]}
    assert cells["synthetic-only"]["train"]["n_real"] > 0  # the fraction is drawn, then not used for training
    assert cells["synthetic-only"]["train"]["n_synthetic"] == 60
    assert cells["pretrain"]["train"]["pretrain_seconds"] > 0
    for cell in cells.values():
        assert set(cell["metrics"]) == {"test", "hospital-b"}
        for test in ("test", "hospital-b"):
            assert 0.0 <= cell["metrics"][test]["auroc"] <= 1.0
    external_rows = [r for r in results["summary"] if r["test_set"] == "hospital-b"]
    assert {r["arm"] for r in external_rows} == {"real", "synthetic-only", "pretrain"}
    with open(tmp_path / "out" / "cells" / cells["real"]["cell"] / "predictions_hospital-b.csv") as handle:
        assert sum(1 for _ in handle) == 60 + 1  # every external image once, plus the header
