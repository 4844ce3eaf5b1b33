"""Cross-fitting by patient for anything that learns from an external set's *unlabelled* images.

A backbone pretrained on the other hospital's images (no labels) must not score those same images:
that would be a test set seen in training. So the external set is split in two folds by patient;
the backbone pretrained with fold 1's images scores fold 0 only, and the other way round, and the
two halves are put back together into one prediction per image (what a hospital that pretrained on
last year's patients would see this year).

    # 1. the folds, as folders of symlinks with the class layout (the study reads them as test sets)
    python bench/crossfit_folds.py split ../shared/data/bcdr-external-dev bench/out/bcdr-folds
    # 2. pretrain with --extra-unlabelled bench/out/bcdr-folds/fold1 (scores fold0), and the reverse;
    #    a study per backbone whose external test set is the fold it did not see
    # 3. one study folder whose cells hold both halves, in the reference study's order
    python bench/crossfit_folds.py merge --fold0 bench/out/A --fold1 bench/out/B --test bcdr \
        --reference bench/out/init-scratch-percentile --out bench/out/crossfit
    # then: bench/compare_arms.py bench/out/crossfit real real --against-study <reference>

The merged cells take their validation and home test predictions from the fold-0 study (both
backbones saw the same home images); the fold-1 study's are printed beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np

from oncosynth.classifiers.adapt import patient_folds
from oncosynth.classifiers.scores import auroc
from oncosynth.data import load_dataset
from oncosynth.study.cells import MARKER, read_marker

from compare_arms import finished_cells  # bench/ is on the path when this file runs as a script


def split(data: Path, out: Path, folds: int, seed: int) -> None:
    dataset = load_dataset(data)
    fold = patient_folds([r.patient for r in dataset.records], folds, seed)
    assignment = {}
    for record, k in zip(dataset.records, fold):
        source = Path(record.source).resolve()
        target = out / f"fold{k}" / source.relative_to(data.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source)
        assignment[source.name] = int(k)
    for k in range(folds):
        members = [r for r, f in zip(dataset.records, fold) if f == k]
        print(f"fold{k}: {len(members)} images, {len({r.patient for r in members})} patients, "
              f"{sum(r.label == dataset.classes[-1] for r in members)} {dataset.classes[-1]}")
    (out / "folds.json").write_text(json.dumps({"data": str(data), "folds": folds, "seed": seed,
                                                "fold_of_image": assignment}, indent=1) + "\n")


def _cells(study: Path) -> dict[int, Path]:
    """seed -> the study's finished cell of arm `real` (non-DP), at its one fraction."""
    cells = finished_cells(study, "real")
    if len({fraction for fraction, _ in cells}) > 1:
        raise SystemExit(f"{study}: `real` cells at several fractions; cross-fitting merges one study of one fraction")
    return {seed: folder for (_, seed), folder in cells.items()}


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _auroc(rows: list[list[str]]) -> float:
    return auroc(np.array([r[1] == "malignant" for r in rows], dtype=np.int64), np.array([float(r[-1]) for r in rows]))


def merge(fold_studies: list[Path], test: str, reference: Path, out: Path) -> dict:
    per_fold = [_cells(s) for s in fold_studies]
    ref = _cells(reference)
    seeds = sorted(set.intersection(*(set(c) for c in per_fold), set(ref)))
    if not seeds:
        raise SystemExit("no seed has a finished `real` cell in every fold study and the reference")
    summary = {"fold_studies": [str(s) for s in fold_studies], "reference": str(reference), "seeds": {}}
    for seed in seeds:
        header, ref_rows = _rows(ref[seed] / f"predictions_{test}.csv")
        merged: dict[str, list[str]] = {}
        fold_rows = [_rows(cells[seed] / f"predictions_{test}.csv")[1] for cells in per_fold]
        for rows in fold_rows:
            for row in rows:
                name = Path(row[0]).name
                if name in merged:
                    raise SystemExit(f"{name} is scored by more than one fold study: the folds overlap")
                merged[name] = row
        names = [Path(r[0]).name for r in ref_rows]
        if sorted(names) != sorted(merged):
            raise SystemExit(f"seed {seed}: the folds together do not score exactly the reference's {test} images")
        ordered = [[r[0]] + merged[Path(r[0]).name][1:] for r in ref_rows]  # the reference's uid and order
        cell = out / "cells" / per_fold[0][seed].name
        cell.mkdir(parents=True, exist_ok=True)
        for other in per_fold[0][seed].glob("predictions_*.csv"):
            if other.name != f"predictions_{test}.csv":
                shutil.copyfile(other, cell / other.name)
        with open(cell / f"predictions_{test}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([header] + ordered)
        record = read_marker(per_fold[0][seed] / MARKER)
        record["crossfit"] = {"test": test, "fold_cells": [str(c[seed]) for c in per_fold]}
        (cell / MARKER).write_text(json.dumps(record, indent=1) + "\n")
        row = {"merged": _auroc(ordered), "reference": _auroc(ref_rows)}
        for k, (cells, rows) in enumerate(zip(per_fold, fold_rows)):
            row[f"fold{k}_alone"] = _auroc(rows)
            for split in ("val", "test"):
                path = cells[seed] / f"predictions_{split}.csv"
                if path.is_file():
                    row[f"{split}_fold{k}_study"] = _auroc(_rows(path)[1])
        summary["seeds"][seed] = row
        print(f"seed {seed}: {test} cross-fitted {row['merged']:.3f} (reference {row['reference']:.3f}); " +
              ", ".join(f"{key} {value:.3f}" for key, value in row.items() if key not in ("merged", "reference")))
    means = {key: float(np.mean([r[key] for r in summary["seeds"].values()])) for key in next(iter(summary["seeds"].values()))}
    summary["mean"] = means
    print("mean: " + ", ".join(f"{key} {value:.3f}" for key, value in means.items()))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split")
    s.add_argument("data", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--folds", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("merge")
    m.add_argument("--fold0", type=Path, required=True, help="study whose backbone did not see fold 0")
    m.add_argument("--fold1", type=Path, required=True, help="study whose backbone did not see fold 1")
    m.add_argument("--test", required=True, help="the external test set's name in both studies")
    m.add_argument("--reference", type=Path, required=True, help="a study that scored the whole external set")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "split":
        split(args.data, args.out, args.folds, args.seed)
    else:
        summary = merge([args.fold0, args.fold1], args.test, args.reference, args.out)
        if args.json is not None:
            args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
