"""Shared fixtures. Real-data tests use ``shared_data`` and skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import oncosynth  # noqa: F401  (first: sets how OpenMP threads wait before torch starts; see oncosynth.threads)
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# `make test` runs two pytest-xdist workers on two cores: one thread each, or they fight over the cores.
# Alone (plain `pytest`), at most two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True, scope="session")
def _isolated_tensor_cache(tmp_path_factory) -> None:
    """Keep the decoded-tensor cache of the test run out of the user's home."""
    import os

    os.environ["ONCOSYNTH_CACHE"] = str(tmp_path_factory.mktemp("tensor-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One torch thread for the test (small models run faster so, and runs are reproducible)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A decoded-tensor cache of the test's own, so no test reads another's cached tensors."""
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))
