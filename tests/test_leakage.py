"""A patient in two splits stops a study and generator training before any work, naming the patient,
unless the user allows it; then the outputs say so.

The leak is planted by hand: one test image is re-assigned, in patients.csv, to a patient of the train split.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from oncosynth.data import load_dataset
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.errors import DataError

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread", "own_cache")


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> tuple[Path, str]:
    """A phantom data set where one test image belongs to a train patient; returns (root, that patient)."""
    root = write_phantom(tmp_path_factory.mktemp("leaky") / "data", PhantomConfig(n=60, size=SIZE, seed=0))
    with open(root / "patients.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train_patient = next(r["patient"] for r in rows if r["file"].startswith("train/malignant/"))
    test_row = next(r for r in rows if r["file"].startswith("test/malignant/"))
    test_row["patient"] = train_patient
    with open(root / "patients.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return root, train_patient


def _study(root: Path, **data) -> dict:
    return {"name": "leak", "data": {"path": str(root), "size": SIZE, "channels": 1, **data},
            "model": {"backbone": "resnet10t"}, "train": {"epochs": 1, "batch_size": 32, "augment": False},
            "arms": [{"name": "real", "kind": "real"}], "seeds": [0], "bootstrap": 100, "report_samples": 0}


def test_the_planted_leak_is_seen(leaky):
    root, patient = leaky
    from oncosynth.data import check_leakage

    assert check_leakage(load_dataset(root)) == [{"patient": patient, "splits": ["test", "train"]}]


def test_a_study_on_leaked_splits_stops_before_any_work_unless_allowed(leaky, tmp_path):
    from oncosynth.study import parse_config, run_study

    root, patient = leaky
    out = tmp_path / "refused"
    with pytest.raises(DataError, match=rf"patient leakage: 1 patient\(s\).*{patient} \(test/train\).*allow_leakage"):
        run_study(parse_config(_study(root)), out, device="cpu", progress=False)
    assert not out.exists()  # nothing written, nothing trained

    out = tmp_path / "allowed"
    report = run_study(parse_config(_study(root)), out, device="cpu", progress=False, allow_leakage=True)
    results = json.loads((out / "results.json").read_text())
    assert results["leakage"] == [{"patient": patient, "splits": ["test", "train"]}]
    assert "patient leakage was allowed" in report.read_text() and patient in report.read_text()
    # the config key does the same as the argument (and a clean data set reports no leakage)
    allowed = parse_config(_study(root, allow_leakage=True))
    from oncosynth.study.inputs import prepare

    assert prepare(allowed, progress=False).leakage == results["leakage"]


def test_the_study_cli_refusal_names_the_patient_and_the_flag(leaky, tmp_path):
    from typer.testing import CliRunner

    from oncosynth.cli import app

    root, patient = leaky
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(_study(root)))
    refused = CliRunner().invoke(app, ["study", str(config), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert isinstance(refused.exception, DataError) and patient in str(refused.exception)
    assert "--allow-leakage" in str(refused.exception)


@pytest.mark.parametrize("method", ["cdcgan", "singan"])
def test_generator_training_on_leaked_splits_stops_unless_allowed(leaky, tmp_path, method):
    from oncosynth.generators import create_generator

    root, patient = leaky
    dataset = load_dataset(root)
    if method == "cdcgan":
        settings = {"width": 4, "size": 32}
        fit = {"steps": 1, "batch_size": 4, "progress": False, "sample_every": None}
    else:
        settings = {"iters": 1, "filters": 4, "blocks": 3, "min_size": 24, "max_size": 32, "sifid_net": None}
        fit = {"class_name": "malignant", "images": 1, "progress": False}
    with pytest.raises(DataError, match=rf"{patient} \(test/train\).*--allow-leakage"):
        create_generator(method, **settings).fit(dataset, tmp_path / "refused", **fit)
    assert not (tmp_path / "refused").exists()
    gen = create_generator(method, **settings).fit(dataset, tmp_path / "allowed", allow_leakage=True, **fit)
    manifest = json.loads((tmp_path / "allowed" / "manifest.json").read_text())
    assert manifest["leakage"] == [{"patient": patient, "splits": ["test", "train"]}]
    assert gen.classes
