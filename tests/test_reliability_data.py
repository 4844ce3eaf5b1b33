"""Malformed data inputs (issue 16): each is one clear error naming the file, or a skipped file.

Every test here reproduces a defect a user hit: silent data loss, a traceback,
or a message that names the wrong thing.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_main import run_main
from PIL import Image

from oncosynth.data import load_dataset, load_images
from oncosynth.data.decode import read_image
from oncosynth.errors import DataError


def _png(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def _two_classes(root: Path, per_class: int = 2) -> Path:
    for cls in ("benign", "malignant"):
        for i in range(per_class):
            _png(root / cls / f"{cls}{i}.png", value=40 * i + (cls == "malignant") * 100)
    return root


_run_cli = run_main  # main() in this process (tests/cli_main.py): exit status, stdout, stderr


def _bomb_png(path: Path, side: int = 14000) -> Path:
    """A 1-bit side×side all-black PNG: ~24 KB on disk, 196 Mpx decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)
    pixels = zlib.compressobj(9)
    body = b"".join(pixels.compress(row) for _ in range(side)) + pixels.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------ npz (item 1) ----
def _npz(path: Path, n_images: int, labels) -> Path:
    images = np.zeros((n_images, 4, 4), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=np.asarray(labels))
    return path


def test_npz_with_fewer_labels_than_images_names_key_and_both_lengths(tmp_path):
    path = _npz(tmp_path / "x.npz", 6, [0, 1, 0, 1])
    with pytest.raises(DataError, match=r"x\.npz.*'train_labels' holds 4 labels but 'train_images' holds 6"):
        load_dataset(path)


def test_npz_with_more_labels_than_images_is_an_error_not_an_index_error(tmp_path):
    path = _npz(tmp_path / "x.npz", 2, [0, 1, 0, 1])
    with pytest.raises(DataError, match="holds 4 labels but 'train_images' holds 2"):
        load_dataset(path)


def test_npz_fractional_labels_are_refused_whole_float_labels_accepted(tmp_path):
    with pytest.raises(DataError, match=r"'train_labels' has dtype float64 with non-integer values \(e\.g\. 0\.5\)"):
        load_dataset(_npz(tmp_path / "frac.npz", 2, [0.5, 1.5]))
    whole = load_dataset(_npz(tmp_path / "whole.npz", 2, [0.0, 1.0]))
    assert [r.label for r in whole] == ["0", "1"]


def test_npz_object_array_is_a_data_error(tmp_path):
    path = tmp_path / "obj.npz"
    images = np.empty(2, dtype=object)
    images[:] = [np.zeros((4, 4)), np.zeros((4, 4))]
    np.savez(path, train_images=images, train_labels=np.array([0, 1]))
    with pytest.raises(DataError, match=r"obj\.npz: 'train_images' is an object array"):
        load_dataset(path)
    result = _run_cli("data", "summary", str(path))
    assert result.returncode == 2 and "obj.npz" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------- image files (items 3, 9) ----
def test_decompression_bomb_is_a_named_error_and_skippable(tmp_path):
    root = _two_classes(tmp_path / "d")
    _bomb_png(root / "benign" / "bomb.png")
    assert (root / "benign" / "bomb.png").stat().st_size < 100_000
    with pytest.raises(DataError, match=r"bomb\.png: image too large to decode safely"):
        read_image(root / "benign" / "bomb.png")
    plain = _run_cli("data", "summary", str(root))
    assert plain.returncode == 2 and "bomb.png" in plain.stderr and "Traceback" not in plain.stderr
    skipped = _run_cli("data", "summary", str(root), "--skip-bad", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert [Path(s["file"]).name for s in json.loads(skipped.stdout)["skipped"]] == ["bomb.png"]
    dataset = load_dataset(root, skip_bad=True)
    assert len(dataset) == 4 and Path(dataset.skipped[0]["file"]).name == "bomb.png"


def test_undecodable_png_message_names_the_file_not_a_buffer(tmp_path):
    root = _two_classes(tmp_path / "d")
    (root / "benign" / "junk.png").write_bytes(b"this is no image at all")
    result = _run_cli("data", "summary", str(root))
    assert result.returncode == 2 and "junk.png" in result.stderr
    assert "BytesIO" not in result.stderr


def test_dangling_png_symlink_is_listed_as_bad_not_ignored(tmp_path):
    root = _two_classes(tmp_path / "d")
    os.symlink(tmp_path / "gone.png", root / "benign" / "link.png")
    with pytest.raises(DataError, match=r"link\.png: broken symbolic link"):
        load_images(load_dataset(root))
    dataset = load_dataset(root, skip_bad=True)
    assert len(dataset) == 4 and [Path(s["file"]).name for s in dataset.skipped] == ["link.png"]
    result = _run_cli("data", "summary", str(root), "--skip-bad", "--json")
    assert [Path(s["file"]).name for s in json.loads(result.stdout)["skipped"]] == ["link.png"]


def test_data_path_that_is_a_symlink_loop_says_so(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    with pytest.raises(DataError, match="symbolic link loop"):
        load_dataset(loop)


# --------------------------------------------------------------- dicom (item 6) ----
def test_skip_bad_skips_a_dicom_with_an_unreadable_header(tmp_path):
    from test_data_formats import write_dicom

    ramp = np.linspace(0, 4095, 64).reshape(8, 8)
    for cls, patient in (("benign", "P1"), ("malignant", "P2")):
        write_dicom(tmp_path / "d" / cls / "ok.dcm", ramp, patient=patient)
    (tmp_path / "d" / "benign" / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(700))
    with pytest.raises(DataError, match="noise.dcm"):
        load_dataset(tmp_path / "d")
    dataset = load_dataset(tmp_path / "d", skip_bad=True)
    assert len(dataset) == 2 and [Path(s["file"]).name for s in dataset.skipped] == ["noise.dcm"]
    result = _run_cli("data", "summary", str(tmp_path / "d"), "--skip-bad", "--json")
    assert result.returncode == 0, result.stderr
    assert [Path(s["file"]).name for s in json.loads(result.stdout)["skipped"]] == ["noise.dcm"]


# ------------------------------------------------------------ study config (item 9) ----
def test_unknown_backbone_is_a_config_error_before_any_cell():
    from oncosynth.errors import ConfigError
    from oncosynth.study.config import parse_config

    raw = {"name": "x", "data": {"path": "."}, "model": {"backbone": "resnet1O"},
           "arms": [{"name": "real", "kind": "real"}], "fractions": [1.0], "seeds": [0]}
    with pytest.raises(ConfigError, match=r"model: .*unknown backbone 'resnet1O'.*did you mean resnet"):
        parse_config(raw)
