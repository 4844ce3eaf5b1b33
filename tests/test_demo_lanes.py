"""The demo's lanes (issue 16, speed under load): a second process only where this one leaves cores idle."""

from __future__ import annotations

import torch

from oncosynth.demo.lanes import Lanes, plan_lanes


def test_one_thread_on_two_cores_is_two_lanes():
    # a shared machine (the thread policy chose one thread) or the user's OMP_NUM_THREADS=1
    assert plan_lanes(cores=2, threads=1) == Lanes(2, 1)
    assert plan_lanes(cores=16, threads=8) == Lanes(2, 8)


def test_threads_for_every_core_is_one_lane():
    # an idle machine keeps torch's one thread per core: a second torch process would only slow it
    assert plan_lanes(cores=2, threads=2) == Lanes(1, 2)
    assert plan_lanes(cores=16, threads=9) == Lanes(1, 9)
    assert plan_lanes(cores=1, threads=1) == Lanes(1, 1)


def test_the_default_is_this_process_threads():
    assert plan_lanes(cores=2 * torch.get_num_threads()) == Lanes(2, torch.get_num_threads())


PARENT = '''
import multiprocessing, sys, time
from oncosynth.runtime.orphans import exit_with_parent

def child(path):
    exit_with_parent(poll_seconds=0.1)
    open(path, "w").write(str(__import__("os").getpid()))
    time.sleep(120)

if __name__ == "__main__":
    multiprocessing.get_context("spawn").Process(target=child, args=(sys.argv[1],)).start()
    time.sleep(120)
'''


def test_the_second_lane_ends_when_the_demo_is_killed(tmp_path):
    """A killed demo must not leave its second process writing into the folders a re-run resumes."""
    from orphan_helpers import assert_child_ends_with_parent

    assert_child_ends_with_parent(PARENT, tmp_path, what="second lane")
