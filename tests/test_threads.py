"""The OpenMP wait policy (issue 16, speed under load): set before torch starts, the user's settings kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from oncosynth.threads import SPIN_COUNT, apply_wait_policy


def test_short_spin_is_set_when_nothing_is_chosen_and_torch_not_started():
    env: dict[str, str] = {}
    assert apply_wait_policy(env, modules={}) == "set"
    assert env == {"GOMP_SPINCOUNT": str(SPIN_COUNT)}


def test_the_users_wait_settings_are_kept():
    for knob in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        env = {knob: "7", "OMP_NUM_THREADS": "3"}
        assert apply_wait_policy(env, modules={}) == "user"
        assert env == {knob: "7", "OMP_NUM_THREADS": "3"}


def test_after_torch_started_nothing_is_changed():
    env: dict[str, str] = {}
    assert apply_wait_policy(env, modules={"torch": object()}) == "too late" and env == {}


def _probe(env: dict[str, str]) -> dict:
    code = ("import json, os, oncosynth.cli, torch, oncosynth.threads as t; "
            "print(json.dumps({**t.status(), 'threads': torch.get_num_threads()}))")
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
                                                                "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_cli_import_sets_the_policy_before_torch_and_keeps_the_thread_count():
    probe = _probe({"OMP_NUM_THREADS": "1"})
    assert probe["policy"] == "set" and probe["GOMP_SPINCOUNT"] == str(SPIN_COUNT) and probe["threads"] == 1
    user = _probe({"GOMP_SPINCOUNT": "5"})
    assert user["policy"] == "user" and user["GOMP_SPINCOUNT"] == "5"
