"""Head-to-head ΔAUROC between two arms of a finished study (the study itself compares every arm with `real`).

Pairs seed s of arm A with seed s of arm B at the same fraction, on the same test cases, and gives
the same intervals as the study's rows: hierarchical bootstrap (seeds, then cases) as the headline,
cases only in brackets, the per-seed differences and a two-sided bootstrap p.

  PYTHONPATH=src .venv/bin/python bench/compare_arms.py bench/out/presets-cbis \
      real+mcgan-cpu-60 real+peer --json bench/results/presets-cbis64-head-to-head.json

Arm B may come from another study on the same data (``--against-study``), e.g. one initialisation
against another: the test cases must then be the same, in the same order (checked by uid).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import oncosynth.study.stats as stats
from oncosynth.study.cells import MARKER, read_marker, read_prediction_uids, read_predictions


def finished_cells(out: Path, arm: str, epsilon: float | None = None) -> dict[tuple[float, int], Path]:
    """(fraction, seed) -> cell folder of the arm's finished cells at this ε (None: without DP), from each
    cell's own record."""
    found = {}
    for folder in (out / "cells").iterdir():
        record = read_marker(folder / MARKER)
        if record is not None and record["arm"] == arm and record["epsilon"] == epsilon:
            found[(record["fraction"], record["seed"])] = folder
    return found


def compare(out: Path, arm_a: str, arm_b: str, resamples: int = 1000, out_b: Path | None = None,
            epsilon: float | None = None) -> list[dict]:
    out_b = out if out_b is None else out_b
    a, b = finished_cells(out, arm_a, epsilon), finished_cells(out_b, arm_b, epsilon)
    if not a or not b:
        raise SystemExit(f"{out if not a else out_b}: no finished cells of arm '{arm_a if not a else arm_b}'")
    first = next(iter(a.values()))
    with open(first / "predictions_val.csv") as handle:  # header: uid, label, p_<class>...
        classes = [column.removeprefix("p_") for column in handle.readline().strip().split(",")[2:]]
    positive = classes.index("malignant") if "malignant" in classes else len(classes) - 1
    tests = sorted(p.stem.removeprefix("predictions_") for p in first.glob("predictions_*.csv"))
    rows = []
    for test in tests:
        if test == "val":
            continue
        for fraction in sorted({f for f, _ in a} & {f for f, _ in b}):
            def by_seed(cells: dict) -> dict[int, np.ndarray]:
                return {s: read_predictions(folder / f"predictions_{test}.csv", classes)[1]
                        for (f, s), folder in cells.items() if f == fraction}
            first_a = next(c for (f, _), c in a.items() if f == fraction) / f"predictions_{test}.csv"
            first_b = next(c for (f, _), c in b.items() if f == fraction) / f"predictions_{test}.csv"
            if read_prediction_uids(first_a) != read_prediction_uids(first_b):
                raise SystemExit(f"{first_a} and {first_b}: not the same test cases; cannot pair them")
            labels, _ = read_predictions(first_a, classes)
            probs_a, probs_b = by_seed(a), by_seed(b)
            index = stats.bootstrap_indices(len(labels), resamples, seed=0)
            row = {"test_set": test, "fraction": fraction, "epsilon": epsilon, "arm": arm_a, "against": arm_b,
                   "seeds": sorted(set(probs_a) & set(probs_b))}
            row.update(stats.paired_comparison(labels, probs_a, probs_b, positive, index, resamples))
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_out", type=Path)
    parser.add_argument("arm_a")
    parser.add_argument("arm_b")
    parser.add_argument("--against-study", type=Path, default=None, help="arm_b's study folder (default: study_out)")
    parser.add_argument("--epsilon", type=float, default=None, help="compare the DP cells at this ε (default: non-DP)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = compare(args.study_out, args.arm_a, args.arm_b, out_b=args.against_study, epsilon=args.epsilon)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"| test | fraction | Δ AUROC {args.arm_a} − {args.arm_b} [hier. CI] (case-only CI) | p (hier.) | per seed |")
    print("|---|---|---|---|---|")
    for r in rows:
        seeds = ", ".join(f"{v:+.3f}" for v in r["per_seed_delta"].values())
        print(f"| {r['test_set']} | {r['fraction']:g} | {r['delta_auroc']:+.3f} [{r['delta_low_hier']:+.3f}, "
              f"{r['delta_high_hier']:+.3f}] ([{r['delta_low']:+.3f}, {r['delta_high']:+.3f}]) | "
              f"{r['p_hier']:.3f} | {seeds} |")


if __name__ == "__main__":
    main()
