"""Study arms do what their names say, judged by outcomes fixed in advance by the data.

* A synthetic folder whose labels are swapped drives ``synthetic-only`` below 0.5 test AUROC while
  ``real`` stays above (the classes here are dark and bright squares, learnt in an epoch or two, so the
  swapped labels are learnt as well).
* ``synthetic-pretrain+real-finetune`` trains on the synthetic images first and then on the real ones,
  starting from exactly the weights pre-training ended with (the weights' path, recorded call by call).
* A DP cell inside a study spends its epsilon as opacus' accountant says; a fraction below 1.0 trains on
  fewer patients; ``--workers 2`` gives the same results as the in-process run.
* A study process killed with SIGKILL while its DP cell trains resumes to the same epsilon and scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from oncosynth.study import parse_config, run_study
from oncosynth.study import cells as study_cells

SIZE = 32



pytestmark = pytest.mark.usefixtures("one_thread", "own_cache")


def _write_set(folder: Path, n: int, seed: int, swap: bool = False, flat: bool = False) -> None:
    """Dark benign (grey 0.35) and bright malignant (0.65) noisy squares: a class any classifier learns in an
    epoch or two. ``flat``: one folder, label last in the file name (swapped on request)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        cls = ("benign", "malignant")[i % 2]
        level = 0.65 if cls == "malignant" else 0.35
        pixels = ((level + 0.15 * torch.randn(SIZE, SIZE, generator=g)).clamp(0, 1) * 255).to(torch.uint8).numpy()
        name = {"benign": "malignant", "malignant": "benign"}[cls] if swap else cls
        path = folder / f"s{i:03d}_{name}.png" if flat else folder / cls / f"{folder.name}{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arms")
    for split, n, seed in (("train", 48, 0), ("val", 16, 1), ("test", 16, 2)):
        _write_set(root / "data" / split, n, seed)
    _write_set(root / "synthetic", 32, 3, flat=True)
    _write_set(root / "swapped", 32, 3, swap=True, flat=True)
    return {"real": root / "data", "synthetic": root / "synthetic", "swapped": root / "swapped"}


def config_dict(data: dict[str, Path], arms: list[dict], **changes) -> dict:
    config = {"name": "arms", "data": {"path": str(data["real"]), "size": SIZE, "channels": 1},
              "model": {"backbone": "resnet10t"},
              # recipe null: the classes differ in brightness only, which the grey default (per-image
              # percentile normalisation) removes on purpose
              "train": {"epochs": 3, "batch_size": 16, "lr": 0.003, "warmup_epochs": 0.5, "augment": False,
                        "recipe": None},
              "dp": {"epsilons": [8.0]}, "arms": arms, "fractions": [1.0], "seeds": [0], "bootstrap": 100,
              "report_samples": 0}
    config.update(changes)
    return config


def _checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def arms_study(data, tmp_path_factory):
    """real (with and without DP), synthetic-only on swapped labels, pre-train + fine-tune; every
    train_classifier call recorded with the weights it started from and ended with."""
    calls = []
    original = study_cells.train_classifier

    def recording(model, train, val, config, **kwargs):
        start = _checksum(model)
        result = original(model, train, val, config, **kwargs)
        calls.append({"n": len(train[1]), "labels": train[1].tolist(), "start": start, "end": _checksum(model),
                      "state_dir": Path(kwargs["state_dir"]).name})
        return result

    study_cells.train_classifier = recording
    try:
        arms = [{"name": "real", "kind": "real", "dp": "both"},
                {"name": "real-fixed-noise", "kind": "real", "dp": "on", "dp_noise_multiplier": 0.5},
                {"name": "swapped-only", "kind": "synthetic-only",
                 "synthetic": {"folder": str(data["swapped"]), "label_from_name": True}},
                {"name": "pretrain", "kind": "synthetic-pretrain+real-finetune", "pretrain_epochs": 2,
                 "synthetic": {"folder": str(data["synthetic"]), "label_from_name": True}}]
        out = tmp_path_factory.mktemp("arms-out") / "study"
        run_study(parse_config(config_dict(data, arms)), out, device="cpu", progress=False)
    finally:
        study_cells.train_classifier = original
    results = json.loads((out / "results.json").read_text())
    return {c["cell"]: c for c in results["cells"]}, calls


def test_swapped_labels_drive_synthetic_only_below_chance_and_real_stays_above(arms_study):
    cells, _ = arms_study
    assert cells["real__nodp__f1__s0"]["metrics"]["test"]["auroc"] > 0.9
    assert cells["swapped-only__nodp__f1__s0"]["metrics"]["test"]["auroc"] < 0.1


def test_pretraining_comes_first_and_fine_tuning_starts_from_its_weights(arms_study):
    cells, calls = arms_study
    pre, fine = [c for c in calls if c["state_dir"] in ("pretrain", "pretrain__nodp__f1__s0")]
    assert pre["state_dir"] == "pretrain" and fine["state_dir"] == "pretrain__nodp__f1__s0"
    cell = cells["pretrain__nodp__f1__s0"]["train"]
    assert pre["n"] == cell["n_synthetic"] == 32 and fine["n"] == cell["n_real"] == 48
    assert fine["start"] == pre["end"] != pre["start"]  # fine-tuning begins where pre-training ended
    assert fine["end"] != fine["start"]


def test_a_dp_cell_inside_a_study_spends_its_budget(arms_study):
    from opacus.accountants.utils import get_noise_multiplier

    cells, calls = arms_study
    train = cells["real__eps8__f1__s0"]["train"]
    n = train["n_real"]
    steps = 3 * -(-n // 16)  # epochs x ceil(N / batch): opacus' Poisson loader length
    sigma = get_noise_multiplier(target_epsilon=8.0, target_delta=1e-4, sample_rate=1 / -(-n // 16), steps=steps)
    assert train["noise_multiplier"] == pytest.approx(sigma, rel=1e-9)
    assert 0.99 * 8.0 <= train["epsilon_spent"] <= 8.0


def test_a_dp_arm_with_fixed_noise_uses_it_and_reports_the_epsilon_it_spends(arms_study):
    from opacus.accountants import RDPAccountant

    cells, _ = arms_study
    record = cells["real-fixed-noise__eps8__f1__s0"]
    train = record["train"]
    n = train["n_real"]
    batches = -(-n // 16)
    accountant = RDPAccountant()
    accountant.history = [(0.5, 1 / batches, 3 * batches)]  # (sigma, sample rate, steps)
    assert train["noise_multiplier"] == 0.5
    assert train["epsilon_spent"] == pytest.approx(accountant.get_epsilon(1e-4), rel=1e-9)
    assert train["epsilon_spent"] > 8.0  # less noise than the ε = 8 target needs: more ε spent, and said so
    assert record["variant"] == "real-fixed-noise (DP σ=0.5)"


def test_fixed_noise_needs_dp_on_and_adding_the_option_keeps_old_fingerprints():
    from oncosynth.errors import ConfigError
    from oncosynth.study.cells import cell_fingerprint, plan_cells

    base = {"name": "fp", "data": {"path": "/data/cbis", "size": 64, "channels": 1}, "model": {"backbone": "resnet10t"},
            "train": {"steps": 2400, "eval_every": 50, "batch_size": 32, "recipe": "mammo"}, "fractions": [1.0],
            "seeds": [0]}
    with pytest.raises(ConfigError, match="dp_noise_multiplier applies to DP cells"):
        parse_config({**base, "arms": [{"name": "r", "kind": "real", "dp": "both", "dp_noise_multiplier": 0.7}]})
    config = parse_config({**base, "arms": [
        {"name": "real", "kind": "real", "dp": "both"},
        {"name": "peer", "kind": "real+synthetic",
         "synthetic": {"folder": "/data/peer", "label_from_name": True, "mix": 0.25}}]})
    # computed before dp_noise_multiplier existed: cells of studies made then must still resume
    assert {c.id: cell_fingerprint(config, c) for c in plan_cells(config)} == {
        "real__nodp__f1__s0": "006d6756bbe9ae7b", "real__eps6__f1__s0": "b8bac4fd3de7f4e1",
        "peer__nodp__f1__s0": "0883f6187da14ff4"}


def _comparable(value):
    """results.json without timings, which differ from run to run."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()
                if not any(t in k for t in ("second", "minute")) and k != "manifest"}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def test_workers_2_give_the_same_results_as_in_process_and_fractions_below_one_run(data, tmp_path):
    config = parse_config(config_dict(data, [{"name": "real", "kind": "real"}], fractions=[0.5, 1.0],
                                      train={"epochs": 1, "batch_size": 16, "augment": False}))
    run_study(config, tmp_path / "inline", device="cpu", progress=False)
    run_study(config, tmp_path / "pool", device="cpu", progress=False, executor_options={"workers": 2})
    inline = json.loads((tmp_path / "inline" / "results.json").read_text())
    pool = json.loads((tmp_path / "pool" / "results.json").read_text())
    assert _comparable(inline) == _comparable(pool)
    cells = {c["cell"]: c for c in inline["cells"]}
    half, full = cells["real__nodp__f0.5__s0"]["train"]["n_real"], cells["real__nodp__f1__s0"]["train"]["n_real"]
    assert (half, full) == (24, 48)  # by hand: every file is its own patient, round(0.5 x 24) of each class


def test_a_killed_dp_study_resumes_to_the_same_epsilon_and_scores(data, arms_study, tmp_path):
    """SIGKILL the `oncosynth study` process once the DP cell has saved an epoch, then run it again."""
    cells, _ = arms_study
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(config_dict(data, [{"name": "real", "kind": "real", "dp": "on"}])))
    out = tmp_path / "out"
    state = out / "cells" / "real__eps8__f1__s0" / "train_state.pt"
    command = [sys.executable, "-c", "from oncosynth.cli import main; main()", "study", str(config),
               "--out", str(out), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the study ended before it could be killed: {process.stderr.read()[-500:]!r}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "results.json").exists() and state.exists()

    run_study(config, out, device="cpu", progress=False)
    resumed = json.loads((out / "results.json").read_text())["cells"][0]
    straight = cells["real__eps8__f1__s0"]  # the same cell, uninterrupted, in the arms study
    assert resumed["train"]["epsilon_spent"] == pytest.approx(straight["train"]["epsilon_spent"], rel=1e-12)
    assert [h["epsilon"] for h in resumed["train"]["history"]] == pytest.approx(
        [h["epsilon"] for h in straight["train"]["history"]], rel=1e-12)
    assert resumed["metrics"]["test"]["auroc"] == pytest.approx(straight["metrics"]["test"]["auroc"], abs=1e-6)
