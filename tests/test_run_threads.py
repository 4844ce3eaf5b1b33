"""A resumed run keeps the CPU thread count it started with (issue 16: oncosynth now picks one thread
on a shared machine, so a run may start on a busy machine and resume on an idle one, or the reverse).

A thread count changes the last bits of float reductions: a run resumed under another count would end
elsewhere than an uninterrupted one. Each test first shows that the count matters for its model (the
1-thread and 2-thread runs differ), then resumes a 2-thread run in a 1-thread process and expects the
uninterrupted 2-thread result bit for bit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from oncosynth.generators import create_generator
from oncosynth.runtime.run_threads import THREADS_FILE, RunThreads, pinned_count
from oncosynth.study import parse_config, run_study
from oncosynth.study import cells as study_cells

pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture
def threads():
    """Set torch's thread count inside a test; the count it had is put back afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# ------------------------------------------------------------ the record ----
def test_a_new_run_records_the_count_and_a_resume_uses_it_then_restores_the_process_count(tmp_path, threads):
    threads(2)
    with RunThreads(tmp_path / "run") as count:
        assert count == 2
    assert json.loads((tmp_path / "run" / THREADS_FILE).read_text()) == {"threads": 2}
    threads(1)
    with RunThreads(tmp_path / "run") as count:
        assert count == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    assert pinned_count(tmp_path / "campaign", 3) == 3 and pinned_count(tmp_path / "campaign", 1) == 3


def test_a_damaged_record_is_set_aside_and_the_process_count_recorded(tmp_path, threads, caplog):
    threads(1)
    for damage in ("{", '{"threads": 0}', '{"threads": true}', '{"count": 2}'):
        folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / THREADS_FILE).write_text(damage)
        with RunThreads(folder) as count:
            assert count == 1
        aside = [p for p in folder.iterdir() if p.name.startswith("damaged-")]
        assert len(aside) == 1 and aside[0].read_text() == damage  # kept, never deleted
        assert json.loads((folder / THREADS_FILE).read_text()) == {"threads": 1}
    assert "threads.json" in caplog.text and "set aside" in caplog.text


def test_a_rank_that_does_not_write_reads_but_records_nothing(tmp_path, threads):
    threads(2)
    with RunThreads(tmp_path / "rank1", write=False) as count:
        assert count == 2
    assert not (tmp_path / "rank1").exists()


# -------------------------------------------------------- generator run ----
def _fit(run: Path, steps: int):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 1, 32, 32, generator=g) * 255).to(torch.uint8)
    gen = create_generator("cdcgan", width=4)
    gen.fit((images, torch.arange(16) % 2, ["a", "b"]), run, steps=steps, batch_size=4, seed=0, device="cpu",
            progress=False, checkpoint_every=4, sample_every=0)
    return gen.state_tensors()


def test_a_generator_run_resumed_under_another_thread_count_ends_where_the_uninterrupted_one_does(
        tmp_path, threads):
    threads(1)
    one = _fit(tmp_path / "one", 8)
    threads(2)
    two = _fit(tmp_path / "two", 8)
    assert any(not torch.equal(one[k], two[k]) for k in one), "the count does not matter for this model"

    _fit(tmp_path / "resumed", 4)  # started with two threads: its first checkpoint
    threads(1)
    resumed = _fit(tmp_path / "resumed", 8)
    assert [k for k in two if not torch.equal(two[k], resumed[k])] == []
    assert torch.get_num_threads() == 1
    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert manifest["threads"] == 2


# ------------------------------------------------------------ study cell ----
def _study_data(root: Path) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 32), ("val", 16), ("test", 16)):
        for i in range(n):
            cls = ("benign", "malignant")[i % 2]
            level = 0.6 if cls == "malignant" else 0.4
            pixels = (level + 0.2 * torch.randn(32, 32, generator=g)).clamp(0, 1).mul(255).to(torch.uint8)
            path = root / split / cls / f"{split}{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.numpy()).save(path)
    return root


def _trace(out: Path) -> tuple[list, list]:
    """Every evaluation's training loss and validation score, and the test predictions, of the one cell."""
    cell = json.loads((out / "results.json").read_text())["cells"][0]
    with open(out / "cells" / "real__nodp__f1__s0" / "predictions_test.csv") as handle:
        return [(h["loss"], h["val_auroc"]) for h in cell["train"]["history"]], list(csv.reader(handle))


class _Killed(BaseException):
    """Stands for a kill after the first saved evaluation (BaseException: no executor catches it)."""


def test_a_study_cell_resumed_under_another_thread_count_ends_where_the_uninterrupted_one_does(
        tmp_path, threads, monkeypatch):
    config = parse_config({"name": "threads", "data": {"path": str(_study_data(tmp_path / "data")), "size": 32,
                                                        "channels": 1},
                           "model": {"backbone": "resnet10t"},
                           "train": {"epochs": 3, "batch_size": 16, "lr": 0.003, "augment": False},
                           "arms": [{"name": "real", "kind": "real"}], "fractions": [1.0], "seeds": [0],
                           "bootstrap": 100, "report_samples": 0})
    threads(1)
    run_study(config, tmp_path / "one", device="cpu", progress=False)
    threads(2)
    run_study(config, tmp_path / "two", device="cpu", progress=False)
    assert _trace(tmp_path / "one") != _trace(tmp_path / "two"), \
        "the count does not matter for this model"

    original = study_cells.train_classifier

    def killed_after_first_evaluation(*args, **kwargs):
        def stop(record):
            raise _Killed()
        return original(*args, **{**kwargs, "progress": stop})

    monkeypatch.setattr(study_cells, "train_classifier", killed_after_first_evaluation)
    with pytest.raises(_Killed):
        run_study(config, tmp_path / "resumed", device="cpu", progress=False)
    monkeypatch.setattr(study_cells, "train_classifier", original)
    cell = tmp_path / "resumed" / "cells" / "real__nodp__f1__s0"
    assert (cell / "train_state.pt").is_file() and not (cell / "metrics.json").exists()

    threads(1)
    run_study(config, tmp_path / "resumed", device="cpu", progress=False)
    assert _trace(tmp_path / "resumed") == _trace(tmp_path / "two")
    assert json.loads((cell / THREADS_FILE).read_text()) == {"threads": 2} and torch.get_num_threads() == 1
