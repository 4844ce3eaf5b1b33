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
