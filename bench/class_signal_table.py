"""Collect the class signal of several `oncosynth evaluate --classifier` runs into one table and JSON.

    python bench/class_signal_table.py --run NAME=EVAL_FOLDER [--run ...] --json bench/results/OUT.json

Each EVAL_FOLDER is an `evaluate --out` folder (its metrics.json); NAME labels the row (e.g. the
classifier's seed). Prints synthetic and real AUROC, their gap from 0.5, and the share of the real
separation the synthetic set keeps: (AUROC_synthetic - 0.5) / (AUROC_real - 0.5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(name: str, folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    signal = metrics.get("class_signal")
    if not signal:
        raise SystemExit(f"{folder}/metrics.json has no class signal: run evaluate with --classifier")
    synthetic, real = signal["synthetic"], signal.get("real")
    out = {"name": name, "classifier": signal["classifier"], "synthetic": synthetic, "real": real}
    if real is not None and real["auroc"] != 0.5:
        out["share_of_real_separation"] = (synthetic["auroc"] - 0.5) / (real["auroc"] - 0.5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=EVAL_FOLDER")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for item in args.run:
        name, _, folder = item.partition("=")
        rows.append(row(name, Path(folder)))
    print("| run | synthetic AUROC | real AUROC | share of real separation | mean P(pos) synthetic by class |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        probs = ", ".join(f"{c} {p:.3f}" for c, p in r["synthetic"]["mean_positive_probability"].items())
        real = f"{r['real']['auroc']:.3f}" if r["real"] else "–"
        share = f"{r['share_of_real_separation']:.2f}" if "share_of_real_separation" in r else "–"
        print(f"| {r['name']} | {r['synthetic']['auroc']:.3f} | {real} | {share} | {probs} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()
