"""Benchmark a generator under a wall-clock budget: training and sampling images/s, sample grids.

Trains in chunks of ``--chunk`` steps until the budget is spent (each chunk
resumes the run from its checkpoint, so the budget can be extended later by
running the same command with a larger --minutes), then times sampling and
writes a grid of samples next to a grid of real training images.

    PYTHONPATH=src python bench/bench_generators.py --method cdcgan --width 16 \
        --data ../shared/data/cbis-ddsm-masses --minutes 60 --name cdcgan-cbis

Outputs: bench/out/<name>/ (run folder, result.json; git-ignored) and
bench/generators_<name>.png (samples: one row per class, then real images).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from oncosynth.data import cached_tensors, load_dataset
from oncosynth.generators import create_generator, generate_images, latest_checkpoint, load_generator
from oncosynth.io import save_grid, write_json

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--name", required=True, help="Run name under bench/out/")
    ap.add_argument("--minutes", type=float, default=60.0, help="Training wall-clock budget")
    ap.add_argument("--cpu-minutes", type=float, default=None,
                    help="Training budget in this process's CPU time instead of wall clock: the fair budget "
                         "when other jobs share the cores (use with --threads 1)")
    ap.add_argument("--chunk", type=int, default=100, help="Steps between budget checks (and checkpoints)")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--width", type=int, default=None, help="cdcgan width")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="any other generator setting, value as JSON (e.g. ada_kimg=100); repeatable")
    ap.add_argument("--sample-n", type=int, default=256, help="Images per class for the sampling timing")
    ap.add_argument("--evaluate", type=int, default=0,
                    help="After training: generate this many images per class and score them (FRD, FID on a "
                         "random CNN) against the test split, next to as many of --peer's images")
    ap.add_argument("--peer", default=None, help="Folder of the peer's synthetic images (class in file name)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    run = HERE / "out" / args.name
    dataset = load_dataset(args.data)
    options = {"size": args.size}
    if args.width is not None:
        options["width"] = args.width
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    clock = time.process_time if args.cpu_minutes is not None else time.perf_counter
    budget_s = 60 * (args.cpu_minutes if args.cpu_minutes is not None else args.minutes)
    start = clock()
    steps, gen = 0, None
    latest = latest_checkpoint(run)
    if latest is not None:
        steps = int(latest.name.split("-")[1])
    train_seconds = 0.0
    train_steps = 0
    train_cpu = 0.0
    if budget_s <= 0:  # no training: benchmark the run as it is
        gen = load_generator(run)
    while clock() - start < budget_s:
        gen = create_generator(args.method, preset=args.preset, **options)
        t0, c0 = time.perf_counter(), time.process_time()
        before = steps
        steps += args.chunk
        gen.fit(dataset, run, steps=steps, batch_size=args.batch_size, seed=args.seed,
                checkpoint_every=args.chunk, sample_every=args.chunk * 5, progress=False, log_every=args.chunk)
        train_seconds += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        train_steps += steps - before
        print(f"step {steps}: {clock() - start:.0f} s", flush=True)
    assert gen is not None, "budget too small for one chunk"
    batch = int(args.batch_size or gen.config["batch_size"])

    t0 = time.perf_counter()
    for name in gen.classes:
        gen.sample(args.sample_n, name, seed=0)
    sample_ips = args.sample_n * len(gen.classes) / (time.perf_counter() - t0)

    grid = [gen.sample(8, name, seed=1000) for name in gen.classes]
    train = dataset.split("train") if "train" in dataset.splits else dataset
    real, labels = cached_tensors(train, gen.size, gen.channels)
    for i, _ in enumerate(gen.classes):
        idx = torch.nonzero(labels == i).flatten()[:8]
        grid.append(real[idx].float() / 255)
    save_grid(torch.cat(grid), HERE / f"generators_{args.name}.png", nrow=8)

    result = {
        "method": gen.name, "preset": args.preset, "config": gen.config, "size": gen.size,
        "channels": gen.channels, "classes": gen.classes, "data": str(args.data), "threads": args.threads,
        "steps_total": gen.step, "steps_this_run": train_steps, "batch_size": batch,
        "train_seconds_this_run": round(train_seconds, 1),
        "train_cpu_seconds_this_run": round(train_cpu, 1),
        "train_img_per_cpu_s": round(train_steps * batch / max(train_cpu, 1e-9), 2),
        "train_img_per_s": round(train_steps * batch / max(train_seconds, 1e-9), 2),
        "sample_img_per_s": round(sample_ips, 1),
        **{f"params_{name}": sum(p.numel() for p in net.parameters()) for name, net in gen.networks().items()},
    }
    if args.evaluate:
        result["evaluation"] = evaluate_samples(run, dataset, gen.classes, args.evaluate, args.peer)
    write_json(run / "result.json", result)
    print(json.dumps(result, indent=2))


def evaluate_samples(run: Path, dataset, classes: list[str], n: int, peer: str | None) -> dict:
    """FRD / FID(random CNN) of n samples per class, and of n peer images per class, against the test split."""
    import shutil

    from oncosynth.metrics.evaluate import evaluate

    out = run / f"samples-{n}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    generate_images(run, out, n, classes, seed=10_000)
    test = dataset.split("test")
    scores = {}
    sets = {"ours": out}
    if peer:
        peer_set = load_dataset(peer, label_from_name=True)
        keep = [r for c in classes for r in [r for r in peer_set.records if r.label == c][:n]]
        sets["peer"] = peer_set.subset(keep)
    for name, synthetic in sets.items():
        metrics = evaluate(test, synthetic, feature_net="random-cnn:0", out=run / f"eval-{name}",
                           label_from_name=True, progress=False, frd_workers=1)
        overall = metrics["results"]["overall"]
        scores[name] = {k: overall.get(k) for k in ("frd", "fid", "kid", "precision", "recall", "ms_ssim_synthetic")}
    scores["seconds"] = round(time.perf_counter() - t0, 1)
    return scores


if __name__ == "__main__":
    main()
