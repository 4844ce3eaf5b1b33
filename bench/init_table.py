"""The issue-18 pretraining table: one real-only study per initialisation, side by side.

Each ``NAME=STUDY_OUT`` is a finished (or partly finished) study folder; the table reads each cell's
own record (``metrics.json``): validation AUROC at the selected step (what picks the best
initialisation), test AUROC on every test set, and CPU minutes per cell. The initialisation is
described from the study's ``model.pretrained`` with its pretraining CPU time where the run
recorded it (``oncosynth pretrain`` writes ``cpu_seconds`` into the backbone's config). The best
baseline is the row with the highest mean validation AUROC; the test sets play no part in that.

  PYTHONPATH=src .venv/bin/python bench/init_table.py --fraction 1.0 \
      scratch-old=bench/out/protocol-cbis scratch-new=bench/out/init-scratch-percentile \
      --json bench/results/init-cbis64.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from oncosynth.pretrain import initialisation_of
from oncosynth.study.cells import MARKER, read_marker


def _real_cells(out: Path, fraction: float) -> list[dict]:
    records = [read_marker(folder / MARKER) for folder in sorted((out / "cells").iterdir())]
    return sorted((r for r in records if r is not None and r["kind"] == "real" and r["epsilon"] is None
                   and abs(r["fraction"] - fraction) < 1e-9), key=lambda r: r["seed"])


def _pretraining(out: Path) -> tuple[str, float | None]:
    manifest = json.loads((out / "results.json").read_text())["manifest"] if (out / "results.json").is_file() else {}
    model = manifest.get("config", {}).get("model", {})
    pretrained = model.get("pretrained")
    cpu = None
    if pretrained and (Path(pretrained) / "config.json").is_file():
        cpu = json.loads((Path(pretrained) / "config.json").read_text()).get("cpu_seconds")
    frozen = ", frozen: only the head trains" if model.get("freeze_backbone") else ""
    return initialisation_of(pretrained) + frozen, (cpu / 60 if cpu else None)


def table(studies: dict[str, Path], fraction: float, pretrain_cpu: dict[str, float],
          seeds: list[int] | None = None) -> list[dict]:
    rows = []
    for name, out in studies.items():
        cells = [c for c in _real_cells(out, fraction) if seeds is None or c["seed"] in seeds]
        if not cells:
            raise SystemExit(f"{out}: no finished real-only cell at fraction {fraction}")
        if seeds is not None and len(cells) != len(seeds):  # means over other seeds would not compare
            raise SystemExit(f"{out}: finished seeds {[c['seed'] for c in cells]}, asked for {seeds}")
        init, cpu = _pretraining(out)
        tests = sorted(cells[0]["metrics"])
        rows.append({"init": name, "initialisation": init, "study": str(out), "seeds": [c["seed"] for c in cells],
                     "val_auroc": [c["train"]["val_score"] for c in cells],
                     **{f"{t}_auroc": [c["metrics"][t]["auroc"] for c in cells] for t in tests},
                     "cpu_min_per_cell": mean(c["cpu_seconds"] for c in cells) / 60,
                     "pretrain_cpu_min": pretrain_cpu.get(name, cpu)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", help="NAME=STUDY_OUT")
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--pretrain-cpu", nargs="*", default=[], help="NAME=MINUTES where a run did not record it")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="only these seeds (every study must have finished them)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    studies = dict((n, Path(p)) for n, p in (s.split("=", 1) for s in args.studies))
    cpu = {n: float(m) for n, m in (s.split("=", 1) for s in args.pretrain_cpu)}
    rows = table(studies, args.fraction, cpu, args.seeds)
    best = max(rows, key=lambda r: mean(r["val_auroc"]))["init"]
    if args.json is not None:
        args.json.write_text(json.dumps({"fraction": args.fraction, "selected_on_validation": best, "rows": rows},
                                        indent=1))
    tests = [k for k in rows[0] if k.endswith("_auroc") and k != "val_auroc"]
    print(f"| initialisation | val AUROC, mean (per seed) | {' | '.join(t.removesuffix('_auroc') + ' AUROC, mean (per seed)' for t in tests)} "
          "| CPU min per cell | pretraining CPU min |")
    print("|---|---|" + "---|" * len(tests) + "---:|---:|")

    def cell(values: list[float]) -> str:
        return f"{mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"

    for r in rows:
        mark = " (selected)" if r["init"] == best else ""
        pre = f"{r['pretrain_cpu_min']:.1f}" if r["pretrain_cpu_min"] else "–"
        print(f"| {r['init']}{mark}: {r['initialisation']} | {cell(r['val_auroc'])} | "
              f"{' | '.join(cell(r[t]) for t in tests)} | {r['cpu_min_per_cell']:.1f} | {pre} |")


if __name__ == "__main__":
    main()
