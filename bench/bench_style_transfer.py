"""Style-transfer benchmarks on CBIS-DDSM (128 px).

``throughput``: the batched optimiser against one pair at a time, same pairs, settings and steps; reports
pairs/s of each, the ratio, and the largest relative difference of the final losses.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_style_transfer.py throughput \
        --data ../shared/data/cbis-ddsm-masses --feature-net encoder:bench/out/style/gate-classifier \
        --pairs 16 --steps 50 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def throughput(args) -> dict:
    from oncosynth.data import load_dataset
    from oncosynth.data.decode import load_images
    from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer, transfer_one_at_a_time
    from oncosynth.quality.pipeline import _pairs
    from oncosynth.data.records import Record

    dataset = load_dataset(args.data).split("train")
    contents = [r for r in dataset.records if r.label == "benign"]
    styles = [r for r in dataset.records if r.label == "malignant"]
    pairs = _pairs(contents, styles, args.pairs, 0)
    content = load_images([Record(**p["content"]) for p in pairs], size=args.size, channels=1)
    style = load_images([Record(**p["style"]) for p in pairs], size=args.size, channels=1)
    transfer = StyleTransfer(args.feature_net)
    settings = StyleSettings(steps=args.steps)
    transfer.run(content[:2], style[:2], settings.with_(steps=2))  # warm-up
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    batched = transfer.run(content, style, settings)
    t1, c1 = time.perf_counter(), time.process_time()
    single = transfer_one_at_a_time(transfer, content, style, settings)
    t2, c2 = time.perf_counter(), time.process_time()
    rel = ((batched.total_loss - single.total_loss).abs() / single.total_loss.abs()).max().item()
    return {"feature_net": transfer.features.name, "pairs": args.pairs, "steps": args.steps, "size": args.size,
            "threads": torch.get_num_threads(), "batched_wall_s": t1 - t0, "single_wall_s": t2 - t1,
            "batched_cpu_s": c1 - c0, "single_cpu_s": c2 - c1,
            "batched_pairs_per_s": args.pairs / (t1 - t0), "single_pairs_per_s": args.pairs / (t2 - t1),
            "ratio_wall": (t2 - t1) / (t1 - t0), "ratio_cpu": (c2 - c1) / (c1 - c0),
            "max_rel_final_loss_diff": rel, "max_abs_pixel_diff": (batched.images - single.images).abs().max().item(),
            "mean_abs_pixel_diff": (batched.images - single.images).abs().mean().item(),
            "fraction_pixels_off_by_more_than_1_grey_level": ((batched.images - single.images).abs() > 1 / 255).float().mean().item(),
            "mean_final_loss": batched.total_loss.mean().item(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["throughput"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--feature-net", required=True)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = throughput(args)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
