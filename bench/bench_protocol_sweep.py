"""Issue 17: choose the classifier's step budget on validation, before the study is run.

Runs the `real` arm of a study config (default ``bench/study_protocol_sweep.yaml``) once per
step budget (each budget is its own run: the warm-up + cosine schedule depends on the total),
and prints the best validation AUROC, the step that reached it and the CPU minutes per cell.
The test split is evaluated by the study as always, but this script neither prints nor stores it:
the budget is chosen on validation only.

  OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/bench_protocol_sweep.py \
      --budgets 300 600 1200 --out bench/out/protocol-sweep --json bench/results/protocol-sweep.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oncosynth.study import run_study
from oncosynth.study.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def sweep(config_path: Path, budgets: list[int], out: Path, workers: int) -> list[dict]:
    base = load_config(config_path)
    rows = []
    for steps in budgets:
        config = base.model_copy(update={"train": base.train.model_copy(update={"steps": steps})})
        run_out = out / f"steps-{steps}"
        run_study(config, out=run_out, device="cpu", executor_options={"workers": workers})
        for metrics_file in sorted((run_out / "cells").glob("*/metrics.json")):
            cell = json.loads(metrics_file.read_text())
            rows.append(validation_row(steps, metrics_file.parent.name, cell))
    return rows


def validation_row(budget: int, cell_id: str, cell: dict) -> dict:
    train = cell.get("train", {})
    history = train.get("history", [])
    return {"budget": budget, "cell": cell_id, "fraction": cell.get("fraction"), "seed": cell.get("seed"),
            "best_val_auroc": train.get("val_score"), "best_step": train.get("best_step"),
            "val_curve": [(h.get("step"), h.get("val_auroc")) for h in history],
            "cpu_minutes": cell.get("cpu_seconds", 0) / 60, "wall_minutes": cell.get("wall_seconds", 0) / 60}


def table(rows: list[dict]) -> str:
    lines = ["| budget (steps) | fraction | best val AUROC | best step | CPU min (wall) |", "|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["fraction"], r["budget"])):
        lines.append(f"| {r['budget']} | {r['fraction']} | {r['best_val_auroc']:.3f} | {r['best_step']} | "
                     f"{r['cpu_minutes']:.1f} ({r['wall_minutes']:.1f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "bench" / "study_protocol_sweep.yaml")
    parser.add_argument("--budgets", type=int, nargs="+", default=[300, 600, 1200])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "protocol-sweep")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows here (small; commit it)")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = sweep(args.config, args.budgets, args.out, args.workers)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"started": started, "config": str(args.config), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
