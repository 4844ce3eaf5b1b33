"""The demo's lanes (issue 16, speed under load): how many processes, how many threads each."""

from __future__ import annotations

import torch

from oncosynth.demo.lanes import Lanes, plan_lanes, torch_threads


def test_two_single_thread_lanes_on_two_cores_and_half_the_cores_each_on_more():
    assert plan_lanes(cores=2) == Lanes(2, 1)
    assert plan_lanes(cores=3) == Lanes(2, 1)
    assert plan_lanes(cores=16) == Lanes(2, 8)


def test_the_users_thread_count_is_each_lanes_count():
    assert plan_lanes(cores=16, user_threads=3) == Lanes(2, 3)
    assert plan_lanes(cores=2, user_threads=2) == Lanes(2, 2)


def test_one_core_is_one_lane_with_this_process_threads():
    assert plan_lanes(cores=1) == Lanes(1, torch.get_num_threads())


def test_torch_threads_puts_the_process_count_back_even_after_an_error():
    before = torch.get_num_threads()
    try:
        with torch_threads(before + 1):
            assert torch.get_num_threads() == before + 1
            raise RuntimeError("a step failed")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before
