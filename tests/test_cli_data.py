"""The data commands through the CLI entry point ``main()`` (exit codes, no tracebacks).

In-process (tests/cli_main.py); tests/test_cli_exit_codes.py runs ``data summary`` as a real process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from cli_main import run_main
from typer.testing import CliRunner

from oncosynth.cli import app

runner = CliRunner()


def _tree(root: Path) -> Path:
    for split in ("train", "test"):
        for cls in ("benign", "malignant"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                data = np.random.default_rng(hash((split, cls, i)) % 2**32).integers(0, 255, (8, 8), dtype=np.uint8)
                Image.fromarray(data).save(folder / f"{split}{cls}{i}.png")
    return root


def test_summary_json_keys(tmp_path):
    root = _tree(tmp_path / "d")
    result = runner.invoke(app, ["data", "summary", str(root), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["splits"] == {"train": {"benign": 2, "malignant": 2}, "test": {"benign": 2, "malignant": 2}}
    assert summary["patients"] == {"train": 4, "test": 4}
    assert summary["leakage"] == [] and summary["duplicates"] == []


_run_cli = run_main


def test_bad_input_exits_2_with_the_file_named_and_no_traceback(tmp_path):
    root = _tree(tmp_path / "d")
    bad = root / "train" / "benign" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = _run_cli("data", "summary", str(root))
    assert result.returncode == 2
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    skipped = _run_cli("data", "summary", str(root), "--skip-bad", "--json")
    assert skipped.returncode == 0
    summary = json.loads(skipped.stdout)
    assert [Path(s["file"]).name for s in summary["skipped"]] == ["broken.png"]


def test_unknown_layout_exits_2(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "flat" / "x.png")
    result = _run_cli("data", "summary", str(tmp_path / "flat"))
    assert result.returncode == 2 and "unknown data layout" in result.stderr
