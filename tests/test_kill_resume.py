"""Kill, not exception: a real ``oncosynth train-generator`` process gets SIGKILL once it has written its
first checkpoint (it may be writing the next one at that instant); the same command then resumes, and
the result equals an uninterrupted run's, tensor for tensor.

(The study's kill test, on a DP cell, is in test_study_arms.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from oncosynth.cli import app

ENTRY = "from oncosynth.cli import main; main()"


pytestmark = pytest.mark.usefixtures("one_thread", "own_cache")


def _images(root: Path, per_class: int, classes=("benign", "malignant")) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32] / 32
    for k, cls in enumerate(classes):
        for i in range(per_class):
            base = 0.5 + 0.3 * np.sin(2 * np.pi * (3 + k + i) * x) * np.cos(2 * np.pi * 2 * y)
            pixels = np.clip(base + 0.1 * rng.standard_normal((32, 32)), 0, 1)
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / cls / f"{cls}{i}.png")
    return root


def _kill_when(args: list[str], ready, what: str, timeout: float = 240) -> None:
    """Start ``oncosynth *args``, SIGKILL it as soon as ``ready()`` holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", ENTRY, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env)
    deadline = time.time() + timeout
    while not ready() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    alive = process.poll() is None
    if alive:
        os.kill(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    assert alive, f"the run ended before {what} was seen: {stderr[-500:]!r}"


def _same_tensors(a: Path, b: Path) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    assert [k for k in left if not torch.equal(left[k], right[k])] == []


def test_killed_gan_run_resumes_to_the_uninterrupted_weights(tmp_path):
    data = _images(tmp_path / "data", 4)
    common = ["train-generator", "--method", "cdcgan", "--data", str(data), "--width", "4", "--size", "32",
              "--batch-size", "4", "--checkpoint-every", "4", "--sample-every", "0", "--device", "cpu",
              "--steps", "40"]
    straight = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "straight")])
    assert straight.exit_code == 0, straight.output

    run = tmp_path / "killed"
    _kill_when([*common, "--out", str(run)], lambda: (run / "checkpoints" / "step-0000004" / "config.json").exists(),
               "the first checkpoint")
    assert not (run / "config.json").exists()  # no final model from a killed run
    resumed = CliRunner().invoke(app, [*common, "--out", str(run)])
    assert resumed.exit_code == 0, resumed.output
    _same_tensors(tmp_path / "straight" / "weights.safetensors", run / "weights.safetensors")


def test_killed_singan_resumes_to_the_uninterrupted_weights(tmp_path):
    data = _images(tmp_path / "data", 1, classes=("malignant",))
    common = ["train-generator", "--method", "singan", "--preset", "tiny", "--data", str(data),
              "--class", "malignant", "--images", "1", "--iters", "8", "--min-size", "14", "--max-size", "32",
              "--sifid-net", "none", "--device", "cpu"]
    straight = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "straight")])
    assert straight.exit_code == 0, straight.output

    run = tmp_path / "killed"
    _kill_when([*common, "--out", str(run)], lambda: any(run.glob("members/*/partial-01/config.json")),
               "the first finished scale")
    resumed = CliRunner().invoke(app, [*common, "--out", str(run)])
    assert resumed.exit_code == 0, resumed.output
    members = sorted((tmp_path / "straight" / "members").iterdir())
    assert len(members) == 1
    _same_tensors(members[0] / "weights.safetensors", run / "members" / members[0].name / "weights.safetensors")
