"""Outputs (issue 16 items 5, 8): --out checked before work; a killed ``generate`` resumes to a consistent set."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from cli_main import run_main

from oncosynth.errors import ConfigError
from oncosynth.generators import create_generator, generate_images
from oncosynth.generators import export
from oncosynth.io import check_output_folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("gen") / "run"
    images = (torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    gen = create_generator("cdcgan", width=4, size=32)
    gen.fit((images, torch.arange(8) % 2, ["benign", "malignant"]), folder, steps=1, batch_size=4,
            progress=False, sample_every=None)
    return folder


def _rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in oncosynth catches it."""


def test_killed_generate_leaves_every_png_listed_and_a_rerun_completes_the_set(run, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    generate_images(run, straight, n=5, class_names=["benign", "malignant"], batch_size=2)

    out, real_save, saved = tmp_path / "out", export.save_image, []

    def dying_save(image, path):
        if len(saved) == 6:  # mid-batch: the 2nd image of a batch of malignant
            raise Killed
        real_save(image, path)
        saved.append(path)

    monkeypatch.setattr(export, "save_image", dying_save)
    with pytest.raises(Killed):
        generate_images(run, out, n=5, class_names=["benign", "malignant"], batch_size=2)
    pngs = {p.name for p in out.glob("*.png")}
    listed = {r["file"] for r in _rows(out)} | {r["file"] for r in export._read_rows(out / export.PENDING_CSV)}
    assert len(pngs) == 6 and pngs <= listed  # no image on disk without its row

    monkeypatch.setattr(export, "save_image", real_save)
    new = generate_images(run, out, n=5, class_names=["benign", "malignant"], batch_size=2)
    assert len(new) == 4 and not (out / export.PENDING_CSV).exists()
    assert _rows(out) == _rows(straight)
    for row in _rows(out):
        assert (out / row["file"]).read_bytes() == (straight / row["file"]).read_bytes(), row["file"]
    assert generate_images(run, out, n=5, class_names=["benign", "malignant"]) == []  # complete: nothing to do


def test_generate_refuses_files_it_did_not_make(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / export.image_name("cdcgan", 1, "benign")).write_bytes(b"a user's file")
    with pytest.raises(ConfigError, match="nothing was overwritten"):
        generate_images(run, out, n=2, class_names=["benign"])
    assert (out / export.image_name("cdcgan", 1, "benign")).read_bytes() == b"a user's file"


def test_output_folder_that_is_a_file_or_below_one_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="file: --out is a file, not a folder"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(ConfigError, match="below .*file, which is a file"):
        check_output_folder(tmp_path / "file" / "sub" / "deeper")
    assert check_output_folder(tmp_path / "new" / "folder") == tmp_path / "new" / "folder"


def test_generate_to_a_file_exits_2_before_loading_anything(run, tmp_path):
    (tmp_path / "taken").write_text("x")
    result = run_main("generate", str(run), "--n", "1", "--class", "benign", "--out", str(tmp_path / "taken"))
    assert result.returncode == 2 and "taken: --out is a file" in result.stderr and "Traceback" not in result.stderr


def test_every_command_writing_a_folder_refuses_an_out_that_is_a_file_before_any_work(tmp_path, monkeypatch,
                                                                                         capsys):
    """Issue 16 item 5, through the entry point ``oncosynth.cli.main`` (in this process: seven interpreters
    would cost half a minute of imports): one line naming the path, exit 2, nothing read or computed (no
    tensor cache appears). evaluate, study, generate and demo are checked above, in test_reliability_runs
    and in test_cli_exit_codes; these are the other commands that write a folder."""
    from oncosynth.cli import main
    from oncosynth.data.phantom import PhantomConfig, write_phantom

    data = str(write_phantom(tmp_path / "data", PhantomConfig(n=24, size=32, difficulty="easy", seed=0)))
    (tmp_path / "taken").write_text("x")
    taken, below = str(tmp_path / "taken"), str(tmp_path / "taken" / "run")
    cases = {
        "singan": ["train-generator", "--method", "singan", "--preset", "tiny", "--class", "malignant",
                   "--data", data, "--out", taken],
        # layers the 4-layer random-cnn has, so that without the check work would start
        "style-transfer generator": ["train-generator", "--method", "style-transfer", "--data", data, "--out", below,
                                     "--option", "feature_net=random-cnn:0", "--option", "content_layer=conv_2",
                                     "--option", 'style_layers=["conv_1", "conv_2"]'],
        "fit-anomaly": ["fit-anomaly", "--data", data, "--out", below, "--widths", "2,4", "--epochs", "1"],
        "style-transfer": ["style-transfer", "--data", data, "--out", taken, "--feature-net", "random-cnn:0",
                           "--content-layers", "conv_1,conv_2", "--baseline-layer", "conv_2", "--style-layers", "conv_1"],
        "style-transfer --sweep": ["style-transfer", "--sweep", "--data", data, "--out", below,
                                   "--feature-net", "random-cnn:0"],
        "pretrain": ["pretrain", "--data", data, "--out", below, "--backbone", "resnet10t", "--size", "32",
                     "--steps", "1", "--batch-size", "4", "--device", "cpu"],
        "data phantom": ["data", "phantom", below, "--n", "20", "--size", "32"],
    }
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))
    capsys.readouterr()
    failures = []
    for name, args in cases.items():
        monkeypatch.setattr(sys, "argv", ["oncosynth", *args])
        with pytest.raises(SystemExit) as exited:  # any other exception would be a traceback
            main()
        line = capsys.readouterr().err.strip()
        wanted = "taken: --out is a file" if taken in args else "which is a file"
        if exited.value.code != 2 or wanted not in line or len(line.splitlines()) != 1:
            failures.append(f"{name}: exit {exited.value.code}, stderr: {line[-400:]}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "cache").exists() and (tmp_path / "taken").read_text() == "x"
