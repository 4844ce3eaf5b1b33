"""The OpenMP wait policy (issue 16, speed under load): set before torch starts, the user's settings kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import oncosynth.threads as threads
from oncosynth.threads import SPIN_COUNT, SPIN_COUNT_IDLE, apply_wait_policy, others_busy_cores


@pytest.fixture(autouse=True)
def _keep_this_process_policy(monkeypatch):
    """The tests call the policy on made-up environments; this process's own record is put back after each."""
    for name in ("_STATUS", "_MACHINE", "_THREADS"):
        monkeypatch.setattr(threads, name, getattr(threads, name))


def test_short_spin_and_one_thread_on_a_shared_machine_when_nothing_is_chosen_and_torch_not_started(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    env: dict[str, str] = {}
    assert apply_wait_policy(env, modules={}, busy_cores=lambda: 1.0) == "set"
    assert env == {"GOMP_SPINCOUNT": str(SPIN_COUNT), "OMP_NUM_THREADS": "1"}
    assert threads.status()["thread_count"] == "one (the machine was shared at start)"


def test_the_spin_and_thread_count_follow_the_machine_it_starts_on(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    for busy, spin, count, machine in ((0.1, SPIN_COUNT_IDLE, None, "idle"), (0.9, SPIN_COUNT, "1", "shared"),
                                       (None, SPIN_COUNT, None, "unknown")):
        env: dict[str, str] = {}
        assert apply_wait_policy(env, modules={}, busy_cores=lambda: busy) == "set"
        assert env.pop("OMP_NUM_THREADS", None) == count
        assert env == {"GOMP_SPINCOUNT": str(spin)} and threads.status()["machine"] == machine


def test_the_users_thread_count_is_kept_on_a_shared_machine(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    env = {"OMP_NUM_THREADS": "2"}
    assert apply_wait_policy(env, modules={}, busy_cores=lambda: 1.5) == "set"
    assert env == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": str(SPIN_COUNT)}
    assert threads.status()["thread_count"] == "the user's OMP_NUM_THREADS=2"


def test_one_thread_needs_no_sample(monkeypatch):
    def never() -> float:
        raise AssertionError("sampled the machine for a single thread")

    env = {"OMP_NUM_THREADS": "1"}
    assert apply_wait_policy(env, modules={}, busy_cores=never) == "set"
    assert env["GOMP_SPINCOUNT"] == str(SPIN_COUNT)


def test_others_busy_cores_from_two_samples_of_proc_stat(tmp_path, monkeypatch):
    # user nice system idle iowait irq softirq steal; between the samples: 60 busy + 140 idle jiffies of 200
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 1000 10 0 0 0 0 0\n")
    later = "cpu  150 0 60 1130 20 0 0 0 0 0\n"
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: stat.write_text(later))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    assert others_busy_cores(0.01, stat=str(stat)) == pytest.approx(2 * 60 / 200)
    assert others_busy_cores(0.01, stat=str(tmp_path / "missing")) is None


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


def test_beside_a_busy_process_the_cli_runs_torch_on_one_thread():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the neighbour holds a core before oncosynth starts
        probe = _probe({})
    finally:
        busy.kill()
        busy.wait()
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: one thread anyway")
    assert probe["machine"] == "shared" and probe["threads"] == 1 and probe["OMP_NUM_THREADS"] == "1"
