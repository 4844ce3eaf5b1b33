"""The demo's work in two lanes when its process would leave cores idle: on a shared machine.

On a machine that is busy when it starts, oncosynth runs torch on one thread
(:mod:`oncosynth.threads`): OpenMP threads meet at a barrier after every operation, and beside a
busy program the partner they wait for is often descheduled. That one thread gets one core's
share. Independent steps in separate processes never wait for each other, so the operating
system shares the cores between all runnable threads: two lanes beside one busy program get two
of its three shares of two cores instead of one.

On an idle machine the demo keeps one lane with torch's threads: they already use every core, so a
second process only splits them. Two one-thread lanes alone took 276 s against one two-thread lane's
259 (bench/RESULTS.md, "Speed under load", the fifth window).

The second lane takes what needs nothing from the main lane: SinGAN, the diffusion model and the
study's real-only cells, about as much work as the main lane's GAN. The main lane trains the GAN and
generates, waits for the second lane, then trains the real+synthetic cells on two worker processes
(one per lane) and writes the study's report from all four cells.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oncosynth.runtime.orphans import exit_with_parent


@dataclass(frozen=True)
class Lanes:
    """``count`` lanes of ``threads`` torch threads each (one lane: everything in this process, in order)."""

    count: int
    threads: int


def plan_lanes(cores: int | None = None, threads: int | None = None) -> Lanes:
    """Two lanes of ``threads`` each when they fit in the cores twice over (one thread per lane on a
    shared 2-core machine, or where the user set ``OMP_NUM_THREADS`` that low); else one lane.
    ``threads``: this process's torch threads (default ``torch.get_num_threads()``)."""
    cores = cores or os.cpu_count() or 1
    threads = threads or torch.get_num_threads()
    return Lanes(2 if 2 * threads <= cores else 1, threads)


def start_side_lane(lanes: Lanes, phantom: Path, out: Path, seed: int,
                    settings: dict[str, Any]) -> futures.Future | None:
    """Start the second lane's steps in a second process; None with one lane (the caller runs
    them itself). ``settings`` holds the steps' sizes, passed explicitly: a fresh process does not
    see changes made to this one's module constants."""
    if lanes.count < 2:
        return None
    # the lane ends itself when this process is killed: a re-run must not meet it still writing
    pool = futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=exit_with_parent)
    future = pool.submit(side_lane, str(phantom), str(out), seed, settings, lanes.threads)
    pool.shutdown(wait=False)  # the process ends after its one job; the future still holds the result
    return future


def side_settings() -> dict[str, Any]:
    """The second lane's sizes, read now from the demo's modules (tests shrink them there)."""
    from oncosynth.demo.generators import DEMO_DDPM, DEMO_DDPM_STEPS, DEMO_SINGAN
    from oncosynth.demo.study import DEMO_STUDY_EPOCHS, DEMO_STUDY_SIZE

    return {"singan": DEMO_SINGAN, "ddpm": DEMO_DDPM, "ddpm_steps": DEMO_DDPM_STEPS,
            "study": {"size": DEMO_STUDY_SIZE, "epochs": DEMO_STUDY_EPOCHS}}


def side_lane(phantom: str, out: str, seed: int, settings: dict[str, Any], threads: int,
              study: bool = True) -> dict[str, Any]:
    """The second lane's steps: SinGAN from one phantom image, the DDPM, then (``study``) the study's
    real-only cells. Runs in the second process, or in this one when there is one lane."""
    from oncosynth.data import load_dataset
    from oncosynth.demo.generators import demo_ddpm, demo_singan

    torch.set_num_threads(threads)
    dataset = load_dataset(phantom)
    started = time.perf_counter()
    singan = demo_singan(dataset, Path(out) / "singan", seed=seed, settings=settings["singan"])
    singan_seconds = time.perf_counter() - started
    ddpm = demo_ddpm(dataset, Path(out) / "ddpm", seed=seed, settings=settings["ddpm"],
                     steps=settings["ddpm_steps"])
    ddpm_seconds = time.perf_counter() - started - singan_seconds
    if study:
        from oncosynth.demo.study import demo_study

        demo_study(Path(out) / "study", phantom, progress=False, arms="real", **settings["study"])
    return {"singan": singan, "singan_seconds": singan_seconds, "ddpm": ddpm, "ddpm_seconds": ddpm_seconds,
            "finished_at": time.perf_counter() - started}
