"""The heap policy: freed memory kept for reuse on glibc under DP-SGD (or everywhere when asked), the user's
malloc settings kept, no numbers changed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import oncosynth.heap as heap
from oncosynth.heap import (KEEP_BYTES, M_MMAP_THRESHOLD, M_TOP_PAD, M_TRIM_THRESHOLD, TOP_PAD_BYTES, apply_at_import,
                            keep_freed_memory)


@pytest.fixture(autouse=True)
def _keep_this_process_policy(monkeypatch):
    monkeypatch.setattr(heap, "_STATUS", heap._STATUS)


def recording_mallopt(answer: int = 1):
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return answer
    return mallopt, calls


def test_sets_the_three_thresholds_when_nothing_is_chosen():
    mallopt, calls = recording_mallopt()
    assert keep_freed_memory({}, mallopt) == "set"
    assert calls == [(M_MMAP_THRESHOLD, KEEP_BYTES), (M_TRIM_THRESHOLD, KEEP_BYTES), (M_TOP_PAD, TOP_PAD_BYTES)]
    assert heap.status()["policy"] == "set"


@pytest.mark.parametrize("knob", heap.USER_KNOBS)
def test_the_users_malloc_settings_switch_it_off(knob):
    mallopt, calls = recording_mallopt()
    assert keep_freed_memory({knob: "1"}, mallopt) == "user" and calls == []


def test_opt_out_and_a_refused_value_are_reported():
    mallopt, calls = recording_mallopt()
    assert keep_freed_memory({"ONCOSYNTH_HEAP": "default"}, mallopt) == "off" and calls == []
    refusing, _ = recording_mallopt(answer=0)
    assert keep_freed_memory({}, refusing) == "refused"


def test_at_import_only_when_asked_to_keep(monkeypatch):
    monkeypatch.setattr(heap, "_STATUS", "not applied")  # a DP test earlier in this worker may have set it
    mallopt, calls = recording_mallopt()
    assert apply_at_import({}, mallopt) == "not applied" and calls == []
    assert apply_at_import({"ONCOSYNTH_HEAP": "keep"}, mallopt) == "set" and len(calls) == 3


def test_an_unknown_setting_is_named_and_ignored():
    mallopt, calls = recording_mallopt()
    with pytest.warns(UserWarning, match="ONCOSYNTH_HEAP='kep'"):
        assert apply_at_import({"ONCOSYNTH_HEAP": "kep"}, mallopt) == heap._STATUS and calls == []
    with pytest.warns(UserWarning, match="not one of"):
        assert keep_freed_memory({"ONCOSYNTH_HEAP": "off"}, mallopt) == "set"


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    monkeypatch.setattr(heap, "_glibc_mallopt", lambda: None)
    assert keep_freed_memory({}) == "unsupported"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keeping_freed_memory_changes_no_training_number():
    """The same seeded steps give bit-equal weights with and without the policy (it moves memory, not math)."""
    script = (
        "import json, sys, oncosynth, torch; from oncosynth.heap import status\n"
        "torch.manual_seed(0); m = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "for _ in range(3):\n"
        "    x = torch.randn(16, 1, 32, 32); loss = m(x).square().mean(); opt.zero_grad(); loss.backward(); opt.step()\n"
        "print(json.dumps({'policy': status()['policy'], 'sum': float(sum(p.double().sum() for p in m.parameters()))}))\n")
    results = {}
    for setting in ("keep", "default"):
        env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "ONCOSYNTH_HEAP": setting}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        results[setting] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["keep"]["policy"] in ("set", "unsupported") and results["default"]["policy"] == "not applied"
    assert results["keep"]["sum"] == results["default"]["sum"]
