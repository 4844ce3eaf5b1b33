"""Damaged resume states and markers (issue 16 item 4), continued: SinGAN progress and members, the
tensor cache, a classifier's EMA weights. Each is named, set aside (renamed, never deleted) and the
work falls back to the last intact state or restarts; nothing ends in a traceback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oncosynth.generators import create_generator
from oncosynth.generators.singan import train as singan_train
from oncosynth.generators.singan import train_singan
from resume_helpers import interrupt_singan_at_scale, same_start_resnet10t

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"iters": 3, "filters": 8, "min_size": 14, "max_size": 32, "sifid_samples": 2}


def _texture(seed: int, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.sin(2 * np.pi * (3 + seed) * x) * np.cos(2 * np.pi * 2 * y)
    return (np.clip(base + 0.1 * rng.standard_normal((size, size)), 0, 1) * 255).astype(np.uint8)


def _aside(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("damaged-"))


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes near the end: inside the tensor data of a safetensors file, the header intact
        path.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))


# ------------------------------------------------------------- SinGAN progress ----
@pytest.mark.parametrize("file, how", [("weights.safetensors", "truncate"), ("weights.safetensors", "flip"),
                                       ("config.json", "truncate"), ("rng.pt", "truncate")])
def test_damaged_newest_singan_partial_falls_back_to_the_previous(tmp_path, monkeypatch, caplog, file, how):
    image = torch.from_numpy(_texture(2)).float()[None] / 255
    straight, _ = train_singan(image, TINY, seed=3)
    interrupt_singan_at_scale(monkeypatch, image, TINY, tmp_path, scale=2)
    assert [p.name for p in singan_train._partials(tmp_path)] == ["partial-01", "partial-02"]
    _damage(tmp_path / "partial-02" / file, how)

    with caplog.at_level(logging.WARNING, logger="oncosynth"):
        resumed, info = train_singan(image, TINY, seed=3, state_dir=tmp_path)
    assert [s["scale"] for s in info["scales"]] == [0, 1, 2]  # scale 0 from partial-01; 1 and 2 trained again
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    (aside,) = _aside(tmp_path)
    assert aside.name.endswith("partial-02") and (aside / file).is_file()
    assert "partial-02" in caplog.text and "set aside" in caplog.text


# -------------------------------------------------------------- SinGAN members ----
@pytest.fixture()
def one_image(tmp_path) -> Path:
    root = tmp_path / "data"
    for cls, seed in (("malignant", 0), ("benign", 9)):
        (root / cls).mkdir(parents=True)
        Image.fromarray(_texture(seed)).save(root / cls / f"{cls}0.png")
    return root


@pytest.mark.parametrize("file, how", [("config.json", "truncate"), ("manifest.json", "truncate"),
                                       ("weights.safetensors", "flip"), ("summary.json", "truncate")])
def test_damaged_finished_singan_member_is_set_aside_and_trained_again(one_image, tmp_path, caplog, file, how):
    run = tmp_path / "run"
    first = create_generator("singan", **TINY).fit(one_image, run, class_name="malignant", progress=False)
    weights = {k: v.clone() for k, v in first.members[0].state_dict().items()}
    member = run / "members" / "member-00"
    _damage(member / file, how)
    _damage(run / "group.json", "truncate")

    with caplog.at_level(logging.WARNING, logger="oncosynth"):
        again = create_generator("singan", **TINY).fit(one_image, run, class_name="malignant", progress=False)
    for key, value in weights.items():  # trained again from the start: the same SinGAN
        assert torch.equal(value, again.members[0].state_dict()[key]), key
    (aside,) = _aside(run / "members")
    assert aside.name.endswith("member-00") and (aside / file).is_file()
    assert [p.name for p in _aside(run)] and _aside(run)[0].name.endswith("group.json")
    assert json.loads((run / "group.json").read_text())["class"] == "malignant"  # written again
    assert "member-00" in caplog.text and "group.json" in caplog.text


# ----------------------------------------------------------------- tensor cache ----
@pytest.mark.parametrize("file, how", [(".u8", "truncate"), (".u8", "flip"), (".json", "truncate")])
def test_damaged_tensor_cache_is_a_miss_set_aside_and_rebuilt(tmp_path, caplog, file, how):
    from oncosynth.data import cached_tensors, load_dataset
    from oncosynth.data import cache

    for i in range(4):
        (tmp_path / "data" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_texture(i, 16)).save(tmp_path / "data" / "ab"[i % 2] / f"x{i}.png")
    dataset, folder = load_dataset(tmp_path / "data"), tmp_path / "cache"
    images, labels = cached_tensors(dataset, cache_dir=folder, progress=False)
    images = images.clone()
    (damaged,) = folder.glob(f"*{file}")
    _damage(damaged, how)
    cache._VERIFIED.clear()  # as a new process finds it

    with caplog.at_level(logging.WARNING, logger="oncosynth"):
        again, again_labels = cached_tensors(dataset, cache_dir=folder, progress=False)
    assert torch.equal(again, images) and torch.equal(again_labels, labels)
    (aside,) = _aside(folder)
    assert aside.name.endswith(damaged.name) and damaged.is_file()  # kept beside the rebuilt entry
    assert damaged.name in caplog.text and "rebuilt" in caplog.text


# ------------------------------------------------------------- classifier EMA ----
def test_damaged_ema_weights_set_the_resume_state_aside_and_training_restarts(tmp_path, caplog):
    from oncosynth.classifiers import TrainConfig, train_classifier

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 2
    images = (torch.rand(32, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3, ema=0.9)
    fresh = same_start_resnet10t(16)

    state_dir = tmp_path / "cell"
    first = train_classifier(fresh(), (images, labels), (images[:16], labels[:16]), config, seed=3,
                             state_dir=state_dir)
    _damage(state_dir / "ema_2.pt", "truncate")
    with caplog.at_level(logging.WARNING, logger="oncosynth"):
        again = train_classifier(fresh(), (images, labels), (images[:16], labels[:16]), config, seed=3,
                                 state_dir=state_dir)
    assert [h["epoch"] for h in again.history] == [1, 2]  # restarted from the first epoch
    assert [h["loss"] for h in again.history] == pytest.approx([h["loss"] for h in first.history])
    names = [p.name for p in _aside(state_dir)]
    assert len(names) == 2 and any(n.endswith("ema_2.pt") for n in names)
    assert any(n.endswith("train_state.pt") for n in names) and "ema_2.pt" in caplog.text


def test_two_processes_setting_aside_the_same_damage_keep_both_copies_and_lose_nothing(tmp_path, monkeypatch):
    from oncosynth import io

    damaged = tmp_path / "train_state.pt"
    damaged.write_bytes(b"first")
    first = io.set_aside(damaged, "truncated")
    damaged.write_bytes(b"second")  # the same damage found again in the same second by another process
    monkeypatch.setattr(io.os, "getpid", lambda: 999_999)
    second = io.set_aside(damaged, "truncated")
    assert first != second and first.read_bytes() == b"first" and second.read_bytes() == b"second"
    assert io.set_aside(damaged, "truncated") is None  # already moved by the other one: no traceback
