"""Damaged resume states and markers (issue 16 item 4): named, set aside (never deleted), work restarts."""

from __future__ import annotations

import torch

from oncosynth.classifiers import TrainConfig, train_classifier
from resume_helpers import same_start_resnet10t
from toy_data import squares


def test_truncated_classifier_train_state_is_set_aside_and_training_restarts(tmp_path, caplog):
    torch.set_num_threads(1)
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3)
    train, val = squares(32, 0), squares(16, 1)
    fresh = same_start_resnet10t(16)

    straight = fresh()
    train_classifier(straight, train, val, config, seed=3)
    state_dir = tmp_path / "cell"
    train_classifier(fresh(), train, val, config, seed=3, state_dir=state_dir)
    state = state_dir / "train_state.pt"
    state.write_bytes(state.read_bytes()[:300])  # a kill mid-copy, a full disk: a truncated file

    again = fresh()
    result = train_classifier(again, train, val, config, seed=3, state_dir=state_dir)
    assert [h["epoch"] for h in result.history] == [1, 2]  # restarted from the first epoch
    aside = [p for p in state_dir.iterdir() if p.name.startswith("damaged-")]
    assert len(aside) == 1 and aside[0].name.endswith("train_state.pt") and aside[0].stat().st_size == 300
    assert "train_state.pt" in caplog.text and "set aside" in caplog.text
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), again.state_dict()[key].float(), atol=1e-5), key
