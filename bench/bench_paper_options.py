"""Cost of each released-code option per training step on this CPU (issue 21: what the cpu presets keep).

For each model, times ``--steps`` train_steps (after ``--warmup``) of the ``cpu`` preset and of the
preset with one option switched to its alternative, on random images of the benchmark's size, in
process CPU time with one thread (two threads on an oversubscribed machine count their spin-waits).
The configurations take turns step by step; steps 1-16 hold four path-length steps and one R1 step.
Noisy on a shared machine: the load average is recorded beside the numbers.

    PYTHONPATH=src python bench/bench_paper_options.py --threads 1 --out bench/paper_options.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from oncosynth.generators import create_generator

# (label, options relative to the cpu preset)
STYLEGAN2 = [
    ("cpu preset", {}),
    ("bilinear resampling (old)", {"resample": "bilinear"}),
    ("no activation clamp", {"conv_clamp": None}),
    ("D mapping depth 8", {"d_map_layers": 8}),
    ("no style mixing", {"style_mixing": 0.0}),
    ("no path-length reg", {"pl_weight": 0.0, "pl_interval": 0}),
    ("R1 folded into D step (old)", {"r1_mode": "folded"}),
    ("2x oversampled ADA warp (released)", {"ada_oversample": True}),
    ("fused modulation", {"fused_modconv": True}),
]
MCGAN = [
    ("cpu preset", {}),
    ("4x4 D kernels (old)", {"d_kernel": 4}),
    ("batch norm", {"norm": "batch"}),
    ("1 D step per G step (old)", {"d_steps_per_g": 1}),
    ("sigmoid + BCE (released)", {"loss": "sigmoid"}),
]


def build(method: str, size: int, options: dict):
    torch.manual_seed(0)
    gen = create_generator(method, preset="cpu", size=size, **options)
    gen.configure(["benign", "malignant"], 1, size)
    if method == "stylegan2-ada":
        gen.augment.p.fill_(0.3)  # ADA active, as after the first minutes on small data
    return gen


def time_interleaved(method: str, size: int, batch: int, table: list, steps: int, warmup: int) -> list[list[float]]:
    """CPU seconds of each step of each configuration, the configurations taking turns step by step
    (so a change in the machine's load hits all of them alike)."""
    gens = [build(method, size, options) for _, options in table]
    reals = torch.rand(batch, 1, size, size) * 2 - 1
    labels = torch.arange(batch) % 2
    times: list[list[float]] = [[] for _ in table]
    for step in range(warmup + steps):
        for i, gen in enumerate(gens):
            gen.step = step
            start = time.process_time()
            gen.train_step(reals, labels)
            if step >= warmup:
                times[i].append(time.process_time() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=16, help="timed steps (from step --warmup on)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for method, size, batch, table in (("stylegan2-ada", 64, 16, STYLEGAN2), ("cdcgan", 128, 8, MCGAN)):
        load = os.getloadavg()[0]
        times = time_interleaved(method, size, batch, table, args.steps, args.warmup)
        base = sum(times[0])
        for (label, options), t in zip(table, times):
            rows.append({"method": method, "size": size, "batch": batch, "option": label, "options": options,
                         "cpu_s_per_step": round(sum(t) / len(t), 4), "relative_to_cpu_preset": round(sum(t) / base, 3),
                         "load_avg_1min_at_start": round(load, 2)})
            print(f"{method:14s} {label:30s} {sum(t) / len(t):7.3f} CPU-s/step  x{sum(t) / base:.2f}  (load {load:.1f})",
                  flush=True)
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, "steps": args.steps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
