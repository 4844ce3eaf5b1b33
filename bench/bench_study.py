"""Benchmark of the classifier study on CBIS-DDSM masses (issue 3).

Parts (run separately so they can share a busy CPU):

  overhead  images/s of the full training step (uint8 batch -> /255 -> augment ->
            forward/backward -> AdamW + schedule) against the model's own
            forward+backward+step on a float batch already in memory.
  cells     a study grid through ``oncosynth.study.run_study`` (the real code path),
            with results.json / report.html under --out.

Examples (what bench/RESULTS.md (study section) reports):

  PYTHONPATH=src .venv/bin/python bench/bench_study.py overhead
  PYTHONPATH=src .venv/bin/python bench/bench_study.py cells --out bench/out/study-nodp \
      --arms real real+synthetic --epochs 8 --max-minutes 12
  PYTHONPATH=src .venv/bin/python bench/bench_study.py cells --out bench/out/study-dp \
      --arms real --dp 6 --epochs 2

The full grid of the issue (3 seeds x {real, real+oversample, real+synthetic} x
fractions {0.1, 1.0}, plus real and real+synthetic at epsilon 6):

  PYTHONPATH=src .venv/bin/python bench/bench_study.py cells --out bench/out/study-full \
      --arms real real+oversample real+synthetic --dp-arms real real+synthetic --dp 6 \
      --fractions 0.1 1.0 --seeds 0 1 2 --epochs 30

Our generators against the peer: each ``--synthetic NAME=FOLDER`` adds an arm ``real+NAME`` (the
folder's images, class in the file name), paired against the same ``real`` cells; copy finished
cells of the same settings into --out first and they are reused, not retrained:

  PYTHONPATH=src .venv/bin/python bench/bench_study.py cells --out bench/out/study-ours \
      --arms real real+synthetic --synthetic cdcgan=DIR sg2ada=DIR --fractions 0.1 --seeds 0 1 2 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CBIS = DATA / "cbis-ddsm-masses"
MCGAN = DATA / "mcgan-synthetic-cbis-ddsm"


def overhead(size: int, batch: int, steps: int, backbone: str) -> dict:
    from oncosynth.classifiers import TrainConfig, create_classifier, train_classifier
    from oncosynth.data import cached_tensors, load_dataset

    dataset = load_dataset(CBIS)
    images, labels = cached_tensors(dataset.split("train"), size, 1)
    val = cached_tensors(dataset.split("val"), size, 1)
    n = batch * steps

    # the model alone: one float batch already in memory, forward + backward + AdamW step
    torch.manual_seed(0)
    model = create_classifier(backbone, 1, 2, size, classes=dataset.classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = images[:batch].float() / 255, labels[:batch]
    for _ in range(2):  # warm-up
        optimizer.zero_grad(); F.cross_entropy(model(x), y).backward(); optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(); F.cross_entropy(model(x), y).backward(); optimizer.step()
    bare = n / (time.perf_counter() - start)

    # the library's loop on the same number of images (timing excludes validation)
    torch.manual_seed(0)
    model = create_classifier(backbone, 1, 2, size, classes=dataset.classes)
    config = TrainConfig(epochs=1, batch_size=batch, warmup_epochs=0)
    small_val = (val[0][:batch], val[1][:batch])
    loop = train_classifier(model, (images[:n], labels[:n]), small_val, config).train_images_per_second
    return {"backbone": backbone, "size": size, "batch": batch, "steps": steps,
            "model_images_per_second": bare, "loop_images_per_second": loop, "ratio": loop / bare}


def cells(args) -> dict:
    from oncosynth.study import parse_config, run_study

    arms = []
    for name in args.arms:
        private = bool(args.dp) and name in args.dp_arms
        if args.dp_only and not private:
            continue
        dp = ("on" if args.dp_only else "both") if private else "off"
        arm = {"name": name, "kind": name, "dp": dp}
        if name == "real+synthetic":
            arm["synthetic"] = {"folder": str(MCGAN), "label_from_name": True}
        arms.append(arm)
    for named in args.synthetic:  # more real+synthetic arms, one per folder, all paired against `real`
        name, _, folder = named.partition("=")
        arms.append({"name": f"real+{name}", "kind": "real+synthetic", "dp": "off",
                     "synthetic": {"folder": str(Path(folder).resolve()), "label_from_name": True}})
    config = parse_config({
        "name": f"CBIS-DDSM masses, {args.backbone} {args.size} px",
        "data": {"path": str(CBIS), "size": args.size, "channels": 1},
        "model": {"backbone": args.backbone},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                  "max_minutes": args.max_minutes},
        "dp": {"epsilons": args.dp or [6.0]},
        "arms": arms, "fractions": args.fractions, "seeds": args.seeds, "bootstrap": 1000,
    })
    report = run_study(config, args.out, device=args.device)
    results = json.loads((Path(args.out) / "results.json").read_text())
    return {"report": str(report), "summary": results["summary"],
            "cells": [{k: c[k] for k in ("cell", "cpu_seconds", "wall_seconds")} | {
                "epochs_run": c["train"]["epochs_run"], "best_epoch": c["train"]["best_epoch"],
                "epsilon_spent": c["train"]["epsilon_spent"], "stopped_early": c["train"]["stopped_early"],
                "images_per_second": c["train"]["train_images_per_second"]} for c in results["cells"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["overhead", "cells"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--arms", nargs="+", default=["real", "real+synthetic"])
    parser.add_argument("--dp-arms", nargs="+", default=["real"])
    parser.add_argument("--dp", type=float, nargs="*", default=[])
    parser.add_argument("--dp-only", action="store_true", help="only the DP cells of the DP arms")
    parser.add_argument("--synthetic", nargs="*", default=[], metavar="NAME=FOLDER",
                        help="extra arms real+NAME adding the images in FOLDER (class in the file name)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "study")
    args = parser.parse_args()
    if not CBIS.is_dir():
        raise SystemExit(f"CBIS-DDSM patches not found at {CBIS}")
    torch.set_num_threads(args.threads)
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    result = overhead(args.size, args.batch_size, args.steps, args.backbone) if args.part == "overhead" else cells(args)
    result["wall_seconds"] = time.perf_counter() - started_wall
    result["cpu_seconds"] = time.process_time() - started_cpu
    result["threads"] = args.threads
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
