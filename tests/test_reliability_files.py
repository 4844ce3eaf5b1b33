"""Files oncosynth writes and reads back (issue 16): corrupt weights are refused, modes honour the umask."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_main import run_main
from PIL import Image

from oncosynth.checkpoint import HASH_KEY, load_checkpoint, save_checkpoint
from oncosynth.errors import CheckpointError
from oncosynth.io import save_image, write_json


def flip_tensor_bytes(weights: Path, count: int = 64) -> None:
    """Invert bytes inside the tensor data of a safetensors file, leaving its header intact."""
    data = bytearray(weights.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    middle = start + (len(data) - start) // 2
    for i in range(middle, min(middle + count, len(data))):
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))


def _png_tree(root: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        folder = root / "train" / cls
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"p{cls}{i}.png")
    return root


_cli = run_main  # main() in this process (tests/cli_main.py): exit status, stdout, stderr


# -------------------------------------------------------- weights hash (item 2) ----
def test_checkpoint_records_the_weights_hash_and_refuses_flipped_bytes(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", {"w": torch.arange(256.0)}, {"kind": "generator/x"}, {"note": 1})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["note"] == 1 and len(manifest[HASH_KEY]) == 64
    tensors, _, loaded_manifest = load_checkpoint(folder)
    assert torch.equal(tensors["w"], torch.arange(256.0)) and loaded_manifest[HASH_KEY] == manifest[HASH_KEY]
    flip_tensor_bytes(folder / "weights.safetensors")
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: corrupt weights \(their SHA-256"):
        load_checkpoint(folder)


def test_checkpoint_without_a_recorded_hash_still_loads(tmp_path):
    """Checkpoints written before hashes were recorded keep working."""
    folder = save_checkpoint(tmp_path / "ck", {"w": torch.ones(3)}, {"kind": "generator/x"})
    write_json(folder / "manifest.json", {})
    assert torch.equal(load_checkpoint(folder)[0]["w"], torch.ones(3))


def test_corrupt_checkpoint_manifest_is_named(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", {"w": torch.ones(3)}, {"kind": "generator/x"})
    (folder / "manifest.json").write_text('{"weights_sha256": "ab')
    with pytest.raises(CheckpointError, match=r"manifest\.json: corrupt manifest"):
        load_checkpoint(folder)


def test_generate_from_flipped_weights_exits_2_naming_the_file(tmp_path):
    data, run = _png_tree(tmp_path / "data"), tmp_path / "run"
    trained = _cli("train-generator", "--method", "cdcgan", "--data", str(data), "--out", str(run), "--steps", "1",
                   "--width", "4", "--batch-size", "4", "--device", "cpu", "--sample-every", "0")
    assert trained.returncode == 0, trained.stderr
    flip_tensor_bytes(run / "weights.safetensors")
    result = _cli("generate", str(run), "--n", "2", "--class", "benign", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "weights.safetensors: corrupt weights" in result.stderr
    assert not list((tmp_path / "out").glob("*.png"))  # nothing generated from corrupt weights


def test_classifier_anomaly_detector_and_singan_member_weights_are_verified(tmp_path):
    from oncosynth.classifiers import create_classifier, load_classifier, save_classifier
    from oncosynth.generators.singan import SinGANMember, load_member, save_member
    from oncosynth.quality.anomaly import AnomalyDetector, UNetAutoencoder

    save_classifier(create_classifier("resnet10t", 1, 2, 32, classes=["a", "b"]), tmp_path / "clf")
    AnomalyDetector(UNetAutoencoder(1, (4, 8)), 16, 0.1).save(tmp_path / "ae")
    save_member(tmp_path / "member", SinGANMember([(8, 8), (12, 12)], 1, filters=4, blocks=2),
                {"settings": {"filters": 4, "blocks": 2}})
    loaders = {"clf": load_classifier, "ae": AnomalyDetector.load, "member": load_member}
    for name, load in loaders.items():
        load(tmp_path / name)  # intact: loads
        flip_tensor_bytes(tmp_path / name / "weights.safetensors")
        with pytest.raises(CheckpointError, match=rf"{name}/weights\.safetensors: corrupt weights"):
            load(tmp_path / name)


# ------------------------------------------------------------ file modes (item 7) ----
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "results.json", {"a": 1})
        save_image(torch.zeros(1, 4, 4), tmp_path / "x.png")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("plain open")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("results.json", "x.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
