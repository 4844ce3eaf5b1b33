"""Scale-out benchmark (issue 8): a 12-cell tiny study under each executor, Ray's per-task overhead,
and FLOP counts for the per-cell figures that docs/scaling.md extrapolates from.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/bench_scale.py all --out bench/out/scale

Sub-commands: ``study`` (the 12-cell grid under local 0/1/2 workers and Ray at 2 CPUs),
``overhead`` (no-op Ray tasks), ``many`` (5,000 no-op tasks, with and without the in-flight window), ``flops`` (train-step FLOPs of the study classifier and cdcgan),
``all``. Results are printed as JSON and written to ``OUT/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SOURCE))


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1]


def tiny_config(data: Path) -> dict:
    """12 cells: 2 arms x 2 fractions x 3 seeds, resnet10t at 32 px, 2 epochs."""
    return {"name": "bench-scale", "data": {"path": str(data), "size": 32, "channels": 1},
            "model": {"backbone": "resnet10t"},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "warmup_epochs": 0.5},
            "arms": [{"name": "real", "kind": "real"}, {"name": "over", "kind": "real+oversample"}],
            "fractions": [0.5, 1.0], "seeds": [0, 1, 2], "bootstrap": 100, "report_samples": 2}


def bench_study(out: Path) -> dict:
    from oncosynth.data.phantom import PhantomConfig, write_phantom
    from oncosynth.study import parse_config, run_study

    data = out / "phantom"
    if not data.is_dir():
        write_phantom(data, PhantomConfig(n=400, size=32, difficulty="medium", seed=0))
    config = parse_config(tiny_config(data))
    torch.set_num_threads(1)
    runs = {}
    for label, executor, options in [("local, inline (workers=0)", "local", {"workers": 0}),
                                     ("local, 1 worker process", "local", {"workers": 1}),
                                     ("local, 2 worker processes", "local", {"workers": 2}),
                                     ("ray, local cluster num_cpus=2", "ray", {"address": None, "num_cpus": 2})]:
        folder = out / "study" / label.split(",")[0] / str(options.get("workers", options.get("num_cpus")))
        shutil.rmtree(folder, ignore_errors=True)
        before = load()
        started = time.perf_counter()
        run_study(config, folder, device="cpu", progress=False, executor=executor, executor_options=options)
        wall = time.perf_counter() - started
        results = json.loads((folder / "results.json").read_text())
        cells = results["cells"]
        runs[label] = {"wall_s": round(wall, 1), "cells": len(cells),
                       "cell_wall_s_mean": round(sum(c["wall_seconds"] for c in cells) / len(cells), 2),
                       "cell_cpu_s_mean": round(sum(c["cpu_seconds"] for c in cells) / len(cells), 2),
                       "load_before": before, "load_after": load()}
        print(label, runs[label], flush=True)
    return runs


def _noop(x):
    return x


def bench_overhead(n: int = 200) -> dict:
    import ray

    from oncosynth.parallel.executor import Unit
    from oncosynth.parallel.ray_executor import RayExecutor

    started = time.perf_counter()
    executor = RayExecutor(address=None, num_cpus=2)
    start_s = time.perf_counter() - started
    units = [Unit(f"noop-{i}", _noop, (i,)) for i in range(n)]
    list(executor.run(units[:4]))  # warm the workers
    result = {"cluster_start_s": round(start_s, 2), "load_before": load()}
    t = time.perf_counter()
    outcomes = list(executor.run(units))
    batch = time.perf_counter() - t
    assert all(o.ok for o in outcomes)
    t = time.perf_counter()
    for unit in units[:30]:
        list(executor.run([unit]))
    serial = (time.perf_counter() - t) / 30
    t = time.perf_counter()
    ray.get([ray.remote(_noop).remote(i) for i in range(n)])
    bare = time.perf_counter() - t
    executor.close()
    result.update({"tasks": n, "batch_wall_s": round(batch, 3), "per_task_ms_batched": round(1000 * batch / n, 2),
                   "per_task_ms_one_at_a_time": round(1000 * serial, 1),
                   "bare_ray_per_task_ms_batched": round(1000 * bare / n, 2), "load_after": load()})
    print("overhead", result, flush=True)
    return result


def bench_many(n: int = 5000) -> dict:
    """Driver cost with many units in flight: the max_in_flight window against none."""
    from oncosynth.parallel.executor import Unit
    from oncosynth.parallel.ray_executor import RayExecutor

    executor = RayExecutor(address=None, num_cpus=2)
    list(executor.run([Unit(f"warm-{i}", _noop, (i,)) for i in range(4)]))
    result = {"units": n, "load_before": load()}
    for window in (2000, n):
        executor.max_in_flight = window
        t = time.perf_counter()
        outcomes = list(executor.run([Unit(f"u{window}-{i}", _noop, (i,)) for i in range(n)]))
        wall = time.perf_counter() - t
        assert len(outcomes) == n and all(o.ok for o in outcomes)
        result[f"max_in_flight={window}"] = {"wall_s": round(wall, 1), "per_task_ms": round(1000 * wall / n, 2)}
    result["load_after"] = load()
    executor.close()
    print("many", result, flush=True)
    return result


def bench_flops() -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from oncosynth.classifiers import create_classifier
    from oncosynth.generators import create_generator

    def train_flops(step, *args) -> float:
        with FlopCounterMode(display=False) as counter:
            step(*args)
        return float(counter.get_total_flops())

    out = {}
    for backbone, size in [("resnet10t", 32), ("resnet18", 128), ("resnet18", 224)]:
        model = create_classifier(backbone, 1, 2, size)
        x = torch.rand(8, 1, size, size)

        def step(x=x, model=model):
            model(x).sum().backward()

        out[f"classifier {backbone} {size}px, fwd+bwd per image"] = train_flops(step) / 8
    for width, size in [(8, 32), (16, 128), (64, 128)]:
        gen = create_generator("cdcgan", width=width, size=size)
        gen.configure(["a", "b"], 1, size)
        reals = torch.rand(8, 1, size, size) * 2 - 1
        labels = torch.zeros(8, dtype=torch.long)
        out[f"cdcgan width {width} {size}px, train step per image"] = train_flops(gen.train_step, reals, labels) / 8
    out = {k: f"{v / 1e9:.3f} GFLOP" for k, v in out.items()}
    print("flops", out, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["study", "overhead", "flops", "many", "all"])
    parser.add_argument("--out", type=Path, default=Path("bench/out/scale"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ONCOSYNTH_CACHE", str(args.out.resolve() / "cache"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")])
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "torch_threads": 1}
    if args.what in ("flops", "all"):
        report["flops"] = bench_flops()
    if args.what in ("overhead", "all"):
        report["ray_overhead"] = bench_overhead()
    if args.what == "many":
        report["ray_many_units"] = bench_many()
    if args.what in ("study", "all"):
        report["study_12_cells"] = bench_study(args.out)
    path = args.out / f"scale-{args.what}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
