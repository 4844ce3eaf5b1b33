"""The demo's work in two lanes: independent steps side by side, each in its own process.

Why processes and not torch's threads: an OpenMP thread team meets at a barrier after every
operation, so when another program holds one of two cores the team waits for its descheduled
member; on a shared machine oncosynth therefore runs torch on one thread (:mod:`oncosynth.threads`),
which leaves the demo's own second core idle when the machine is not shared after all, and gives it
only one core's worth when it is. Independent steps in separate processes never wait for each other:
the operating system shares the cores between every runnable thread, so alone the two lanes use
both cores, and beside a busy program they get two of its three shares (bench/RESULTS.md, "Speed
under load", the demo rows).

The lanes: SinGAN and the diffusion model need nothing from the rest, so they run in a second process
while the main one trains the GAN; the study then trains its cells on one worker process per lane.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from oncosynth.threads import user_thread_count


@dataclass(frozen=True)
class Lanes:
    """``count`` lanes of ``threads`` torch threads each (one lane: everything in this process, in order)."""

    count: int
    threads: int


def plan_lanes(cores: int | None = None, user_threads: int | None = None) -> Lanes:
    """Two lanes on a machine with two or more cores, each with half the cores' threads (the user's
    ``OMP_NUM_THREADS`` when given); one lane, with this process's threads, on a single core."""
    cores = cores or os.cpu_count() or 1
    if cores < 2:
        return Lanes(1, user_threads or torch.get_num_threads())
    return Lanes(2, user_threads or max(1, cores // 2))


def machine_lanes() -> Lanes:
    return plan_lanes(user_threads=user_thread_count())


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, then put this process's count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def start_side_lane(lanes: Lanes, phantom: Path, out: Path, seed: int,
                    settings: dict[str, Any]) -> futures.Future | None:
    """Start SinGAN and the diffusion model in a second process; None with one lane (the caller runs
    them itself). ``settings`` holds the steps' sizes, passed explicitly: a fresh process does not
    see changes made to this one's module constants."""
    if lanes.count < 2:
        return None
    pool = futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(side_lane, str(phantom), str(out), seed, settings, lanes.threads)
    pool.shutdown(wait=False)  # the process ends after its one job; the future still holds the result
    return future


def side_settings() -> dict[str, Any]:
    """The second lane's sizes, read now from ``oncosynth.demo.generators`` (tests shrink them there)."""
    from oncosynth.demo import generators

    return {"singan": generators.DEMO_SINGAN, "ddpm": generators.DEMO_DDPM, "ddpm_steps": generators.DEMO_DDPM_STEPS}


def side_lane(phantom: str, out: str, seed: int, settings: dict[str, Any], threads: int) -> dict[str, Any]:
    """The second lane's steps (in its own process): SinGAN from one phantom image, then the DDPM."""
    import time

    from oncosynth.data import load_dataset
    from oncosynth.demo.generators import demo_ddpm, demo_singan

    torch.set_num_threads(threads)
    dataset = load_dataset(phantom)
    started = time.perf_counter()
    singan = demo_singan(dataset, Path(out) / "singan", seed=seed, settings=settings["singan"])
    singan_seconds = time.perf_counter() - started
    ddpm = demo_ddpm(dataset, Path(out) / "ddpm", seed=seed, settings=settings["ddpm"],
                     steps=settings["ddpm_steps"])
    return {"singan": singan, "singan_seconds": singan_seconds, "ddpm": ddpm,
            "ddpm_seconds": time.perf_counter() - started - singan_seconds}
