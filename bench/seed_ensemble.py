"""AUROC of the mean prediction of a study arm's seeds, beside the seeds' own AUROCs.

    python bench/seed_ensemble.py bench/out/best-cbis-mix real --split val --split test --split bcdr \
        --json bench/results/seed-ensemble-best-cbis64.json

Reads each cell's saved predictions (``predictions_<split>.csv``) of the arm at one fraction, without
DP; trains nothing. An ensemble is a fixed rule (the mean of the seeds' malignant probabilities), so
nothing is selected on the splits it is scored on.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from oncosynth.classifiers.scores import auroc


def read(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = list(csv.DictReader(path.open()))
    return ([r["uid"] for r in rows], np.array([r["label"] == "malignant" for r in rows], dtype=np.int64),
            np.array([float(r["p_malignant"]) for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path)
    ap.add_argument("arm")
    ap.add_argument("--fraction", default="1")
    ap.add_argument("--split", action="append", required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cells = sorted((args.study / "cells").glob(f"{args.arm}__nodp__f{args.fraction}__s*"))
    if len(cells) < 2:
        raise SystemExit(f"{args.study}: fewer than two seeds of arm {args.arm} at fraction {args.fraction}")
    out = {"study": str(args.study), "arm": args.arm, "cells": [c.name for c in cells], "splits": {}}
    for split in args.split:
        runs = [read(c / f"predictions_{split}.csv") for c in cells]
        if any(r[0] != runs[0][0] for r in runs):
            raise SystemExit(f"{split}: the cells scored different images")
        y = runs[0][1]
        seeds = [auroc(y, r[2]) for r in runs]
        ensemble = auroc(y, np.mean([r[2] for r in runs], axis=0))
        out["splits"][split] = {"seeds": seeds, "seed_mean": float(np.mean(seeds)), "ensemble": ensemble}
        print(f"{args.arm} {split}: seeds {np.round(seeds, 3).tolist()} (mean {np.mean(seeds):.3f}), "
              f"ensemble {ensemble:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
