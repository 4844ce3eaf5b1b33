"""Style-transfer benchmarks on CBIS-DDSM (128 px).

``throughput``: the batched optimiser against one pair at a time, same pairs, settings and steps; reports
pairs/s of each, the ratio, and the largest relative difference of the final losses, for every
combination of ``--feature-net`` and ``--threads`` given, as JSON lines and then a table.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_style_transfer.py throughput \
        --data ../shared/data/cbis-ddsm-masses --feature-net encoder:bench/out/style/gate-classifier \
        --feature-net encoder:bench/out/style/anomaly-cpu --pairs 16 --steps 50 --threads 1 2

``accepted-grid``: content | style | result for the first ``--rows`` accepted images of a campaign.

    PYTHONPATH=src python bench/bench_style_transfer.py accepted-grid --campaign bench/out/style/campaign-c05 \
        --out bench/style_accepted-c05.png

A VGG-19 timing needs no ImageNet weights (time does not depend on the weights):
``--random-vgg19 /tmp/vgg19-random.pt`` writes a randomly initialised state dict there and adds
``vgg19:/tmp/vgg19-random.pt`` to the feature nets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def throughput(args, feature_net: str) -> dict:
    from oncosynth.data import load_dataset
    from oncosynth.data.decode import load_images
    from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer, transfer_one_at_a_time
    from oncosynth.quality.campaign import _pairs
    from oncosynth.data.records import Record

    dataset = load_dataset(args.data).split("train")
    contents = [r for r in dataset.records if r.label == "benign"]
    styles = [r for r in dataset.records if r.label == "malignant"]
    pairs = _pairs(contents, styles, args.pairs, 0)
    content = load_images([Record(**p["content"]) for p in pairs], size=args.size, channels=1)
    style = load_images([Record(**p["style"]) for p in pairs], size=args.size, channels=1)
    transfer = StyleTransfer(feature_net)
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


def accepted_grid(campaign: str, out: str, rows: int, size: int) -> None:
    from oncosynth.data.decode import read_image, to_tensor
    from oncosynth.io import save_grid

    manifest = json.loads((Path(campaign) / "manifest.json").read_text())
    accepted = [t for t in manifest["trials"] if t["accepted"]][:rows]
    paths = [p for t in accepted for p in (t["content"], t["style"], Path(campaign) / t["file"])]
    save_grid(torch.stack([to_tensor(read_image(p), size, 1) for p in paths]), out, nrow=3)
    for t in accepted:
        print(f"pair {t['pair']} trial {t['trial']}: {t['content_layer']}, {t['steps']} steps, content weight "
              f"{t['content_weight']:g}; content p(content class) {t['content_prob']:.2f}, result p(style class) "
              f"{t['classifier_prob']:.2f}; anomaly {t['anomaly_score']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["throughput", "accepted-grid"])
    parser.add_argument("--data")
    parser.add_argument("--campaign")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--feature-net", action="append", default=[])
    parser.add_argument("--random-vgg19", metavar="FILE")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--out", help="JSON file for the list of results")
    args = parser.parse_args()
    if args.what == "accepted-grid":
        if not (args.campaign and args.out):
            parser.error("accepted-grid needs --campaign and --out")
        return accepted_grid(args.campaign, args.out, args.rows, args.size)
    if not args.data:
        parser.error("throughput needs --data")
    nets = list(args.feature_net)
    if args.random_vgg19:
        import torchvision

        torch.manual_seed(0)
        torch.save(torchvision.models.vgg19().state_dict(), args.random_vgg19)
        nets.append(f"vgg19:{args.random_vgg19}")
    if not nets:
        parser.error("give at least one --feature-net (or --random-vgg19)")
    results = []
    for net in nets:
        for threads in args.threads:
            torch.set_num_threads(threads)
            results.append(throughput(args, net))
            print(json.dumps(results[-1]), flush=True)
            if args.out:
                with open(args.out, "w") as handle:
                    json.dump(results, handle, indent=2)
    print(f"\n{args.pairs} pairs x {args.steps} steps, {args.size} px")
    print("| feature net | threads | batched pairs/s | single pairs/s | speed-up (wall) | speed-up (CPU) "
          "| CPU ms per pair-step, batched / single | final losses, max rel. diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        pair_steps = r["pairs"] * r["steps"]
        print(f"| {r['feature_net']} | {r['threads']} | {r['batched_pairs_per_s']:.3f} | {r['single_pairs_per_s']:.3f} "
              f"| {r['ratio_wall']:.2f}x | {r['ratio_cpu']:.2f}x "
              f"| {1000 * r['batched_cpu_s'] / pair_steps:.1f} / {1000 * r['single_cpu_s'] / pair_steps:.1f} "
              f"| {100 * r['max_rel_final_loss_diff']:.2f}% |")


if __name__ == "__main__":
    main()
