"""Train the quick CBIS-DDSM classifier that the style-transfer pipeline uses as its gate.

resnet10t, grey, 64 px, a few epochs on the train split, best epoch by validation AUROC.
Writes a classifier checkpoint (``--out``) and prints the history and the best validation AUROC.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_style_gate_classifier.py \
        --data ../shared/data/cbis-ddsm-masses --out bench/out/style/gate-classifier
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from oncosynth.classifiers import TrainConfig, create_classifier, save_classifier, train_classifier
from oncosynth.data import load_dataset
from oncosynth.data.cache import cached_tensors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    train = cached_tensors(dataset.split("train"), size=args.size, channels=1, progress=False)
    val = cached_tensors(dataset.split("val"), size=args.size, channels=1, progress=False)
    model = create_classifier(args.backbone, in_chans=1, num_classes=len(dataset.classes), img_size=args.size,
                              classes=dataset.classes)
    started = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, batch_size=32, lr=2e-3, warmup_epochs=0.5)
    result = train_classifier(model, train, val, config, seed=0, positive=dataset.classes.index("malignant"),
                              progress=lambda r: print(json.dumps(r), flush=True))
    save_classifier(model, args.out, manifest={"val_auroc": result.best_score, "best_epoch": result.best_epoch,
                                               "history": result.history, "data": args.data})
    print(json.dumps({"best_val_auroc": result.best_score, "best_epoch": result.best_epoch,
                      "seconds": time.perf_counter() - started, "classes": dataset.classes}))


if __name__ == "__main__":
    main()
