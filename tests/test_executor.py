"""The local executor: inline and process-pool runs give the same outcomes; failures are reported, not raised."""

import pytest

from oncosynth.errors import ConfigError
from oncosynth.parallel.executor import LocalExecutor, Unit, create_executor, run_all


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


@pytest.mark.parametrize("workers", [0, 2])
def test_local_executor_runs_every_unit_and_reports_failures(workers):
    units = [Unit(f"u{i}", fail_on_three, (i,)) for i in range(5)]
    outcomes = run_all(units, LocalExecutor(workers=workers, retries=1))
    assert [o.key for o in outcomes] == [f"u{i}" for i in range(5)]
    assert [o.value for o in outcomes if o.ok] == [0, 1, 2, 4]
    failed = outcomes[3]
    assert not failed.ok and "three is not allowed" in failed.error and failed.attempts == 2


def test_inline_and_pool_agree():
    units = [Unit(str(i), square, (i,)) for i in range(6)]
    inline = [o.value for o in run_all(units, create_executor("local"))]
    pooled = [o.value for o in run_all(units, create_executor("local", workers=2))]
    assert inline == pooled == [i * i for i in range(6)]


def test_bad_executor_options():
    with pytest.raises(ConfigError, match="unknown executor"):
        create_executor("slurm-magic")
    with pytest.raises(ConfigError, match="unique"):
        run_all([Unit("a", square, (1,)), Unit("a", square, (2,))])


# ------------------------------------------------------------------ worker death
def test_a_killed_pool_worker_is_retried_and_costs_no_other_unit(tmp_path):
    """A unit whose worker process dies (SIGKILL, as the OOM killer would) gets its retry in a fresh worker;
    the units running beside it are neither failed nor charged an attempt."""
    from ray_units import fail_on_three, sigkill_once

    units = [Unit("dies", sigkill_once, (str(tmp_path / "marker"), 7)),
             *[Unit(f"u{i}", fail_on_three, (i,)) for i in (0, 1, 2, 4)]]
    outcomes = run_all(units, LocalExecutor(workers=2, retries=1))
    assert [(o.key, o.value, o.attempts, o.error) for o in outcomes] == [
        ("dies", 7, 2, None), ("u0", 0, 1, None), ("u1", 1, 1, None), ("u2", 4, 1, None), ("u4", 16, 1, None)]


def test_a_killed_pool_worker_without_retries_is_a_reported_failure(tmp_path):
    from ray_units import die_once, fail_on_three

    units = [Unit("dies", die_once, (str(tmp_path / "marker"), 7)), Unit("fine", fail_on_three, (2,))]
    dies, fine = run_all(units, LocalExecutor(workers=2, retries=0))
    assert not dies.ok and "worker process died" in dies.error and dies.attempts == 1
    assert fine.ok and fine.value == 4


STUDY_PARENT = '''
import sys
sys.path.insert(0, sys.argv[2])
from oncosynth.parallel.executor import LocalExecutor, Unit, run_all
from ray_units import write_pid_and_sleep

if __name__ == "__main__":
    run_all([Unit("cell", write_pid_and_sleep, (sys.argv[1], 120))], LocalExecutor(workers=1))
'''


def test_a_pool_worker_ends_when_the_study_process_is_killed(tmp_path):
    """A study killed with SIGKILL must not leave its worker training the cell a re-run starts again."""
    from pathlib import Path

    from orphan_helpers import assert_child_ends_with_parent

    assert_child_ends_with_parent(STUDY_PARENT, tmp_path, str(Path(__file__).parent), what="pool worker")
