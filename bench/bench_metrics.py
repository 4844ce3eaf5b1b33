"""Benchmark of ``oncosynth evaluate`` on CBIS-DDSM and the peer's MCGAN images.

1. Domain encoder: an oncosynth classifier (given with --encoder, or trained
   here: resnet18 from scratch, 1 channel, 64 px, CBIS-DDSM train split,
   selected on val; a few minutes on CPU).
2. evaluate(test, MCGAN 3,000, train=train) and the floor evaluate(test, val,
   train=train): FID/KID/PRDC in the encoder's space, FRD, MS-SSIM,
   memorisation; time of each metric.
3. FRD standard path (frd_score.compute_frd) against our fast path on the
   same subset, side by side (values and seconds).

    python bench/bench_metrics.py --data ../shared/data --out bench/out/metrics
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import torch

torch.set_num_threads(1)


def train_encoder(data: Path, folder: Path, minutes: float) -> Path:
    from oncosynth.classifiers.model import create_classifier, save_classifier
    from oncosynth.classifiers.train import TrainConfig, train_classifier
    from oncosynth.data import cached_tensors, load_dataset

    if (folder / "config.json").is_file():
        return folder
    ds = load_dataset(data / "cbis-ddsm-masses")
    train, val = ds.split("train"), ds.split("val")
    tr = cached_tensors(train, 64, 1)
    va = cached_tensors(val, 64, 1)
    model = create_classifier("resnet18", in_chans=1, num_classes=len(ds.classes), img_size=64, classes=ds.classes)
    config = TrainConfig(epochs=30, batch_size=64, lr=2e-3, max_minutes=minutes)
    start = time.time()
    result = train_classifier(model, tr, va, config, seed=0, positive=ds.classes.index("malignant"))
    save_classifier(model, folder, manifest={"bench": "bench_metrics.py domain encoder",
                                             "best_epoch": result.best_epoch, "val_auroc": result.best_score,
                                             "epochs_run": result.epochs_run, "seconds": time.time() - start})
    print(f"encoder: val AUROC {result.best_score:.3f} after {result.epochs_run} epochs ({time.time() - start:.0f}s)")
    return folder


def frd_side_by_side(data: Path, n: int, workdir: Path) -> dict:
    from oncosynth.metrics import frd as frd_lib

    rng = random.Random(0)
    real = sorted((data / "cbis-ddsm-masses" / "test").glob("*/*.png"))
    synth = sorted((data / "mcgan-synthetic-cbis-ddsm").glob("*.png"))
    folders = {}
    for name, files in (("real", real), ("synthetic", synth)):
        folder = workdir / f"frd-{name}-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for f in rng.sample(files, n):
            shutil.copy(f, folder / f.name)
        folders[name] = folder
    rows = {}
    start = time.time()
    package = frd_lib.frd_package(folders["real"], folders["synthetic"], workers=1)
    rows["package (frd_score.compute_frd, 1 worker)"] = (package.value, time.time() - start)
    for workers in (1, 2):
        frd_lib._CACHE.clear()
        start = time.time()
        fast = frd_lib.frd(folders["real"], folders["synthetic"], method="fast", workers=workers)
        rows[f"fast, {workers} worker(s), cold cache"] = (fast.value, time.time() - start)
    start = time.time()
    warm = frd_lib.frd(folders["real"], folders["synthetic"], method="fast", workers=2)
    rows["fast, warm cache (features already extracted)"] = (warm.value, time.time() - start)
    return {"n_per_set": n, "rows": {k: {"frd": v, "seconds": s} for k, (v, s) in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("bench/out/metrics"))
    parser.add_argument("--encoder", type=Path, default=None, help="classifier checkpoint folder")
    parser.add_argument("--encoder-minutes", type=float, default=4.0)
    parser.add_argument("--frd-subset", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], help="steps to skip: mcgan floor frd")
    args = parser.parse_args()
    from oncosynth.metrics.evaluate import evaluate

    args.out.mkdir(parents=True, exist_ok=True)
    encoder = args.encoder or train_encoder(args.data, args.out / "encoder", args.encoder_minutes)
    spec = f"encoder:{encoder}"
    cbis = args.data / "cbis-ddsm-masses"
    summary = {"encoder": str(encoder), "machine": "2-core CPU shared with other jobs", "runs": {}}
    if "frd" not in args.skip:
        summary["frd_side_by_side"] = frd_side_by_side(args.data, args.frd_subset, args.out)
        print(json.dumps(summary["frd_side_by_side"], indent=1))
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    runs = {"mcgan-vs-test": (cbis / "test", args.data / "mcgan-synthetic-cbis-ddsm"),
            "val-vs-test (floor)": (cbis / "test", cbis / "val")}
    for name, (real, synthetic) in runs.items():
        if ("mcgan" if name.startswith("mcgan") else "floor") in args.skip:
            continue
        start = time.time()
        metrics = evaluate(real, synthetic, train=cbis / "train", feature_net=spec,
                           out=args.out / name.split()[0], label_from_name=True,
                           frd_workers=args.workers, progress=False)
        metrics["total_seconds"] = time.time() - start
        summary["runs"][name] = {"results": metrics["results"], "seconds": metrics["seconds"],
                                 "total_seconds": metrics["total_seconds"],
                                 "memorisation": {k: v for k, v in metrics["memorisation"].items() if k != "flagged"},
                                 "feature_net": metrics["feature_net"], "notes": metrics["notes"]}
        print(name, json.dumps(summary["runs"][name]["results"]["overall"], indent=1), metrics["seconds"])
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
