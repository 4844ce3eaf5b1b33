"""Print a study's results.json as the issue-17 table (markdown), plus its in-study generators' CPU time.

  PYTHONPATH=src .venv/bin/python bench/protocol_table.py bench/results/protocol-cbis64.json \
      --generators bench/out/protocol-cbis/generators
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _row(r: dict) -> str:
    auroc = (f"{r['auroc_mean']:.3f} ± {r['auroc_std']:.3f} [{r['auroc_low_hier']:.3f}, {r['auroc_high_hier']:.3f}] "
             f"([{r['auroc_low']:.3f}, {r['auroc_high']:.3f}])")
    if r.get("delta_auroc") is None:
        delta, seeds = "reference", "–"
    else:
        delta = (f"{r['delta_auroc']:+.3f} [{r['delta_low_hier']:+.3f}, {r['delta_high_hier']:+.3f}], "
                 f"p {_p(r.get('p_hier'))}, Holm {_p(r.get('p_holm'))}")
        seeds = ", ".join(f"{v:+.3f}" for _, v in sorted(r.get("per_seed_delta", {}).items()))
    budget = f"{r['steps']:.0f} ({r['best_step']:.0f})" if r.get("steps") else ""
    seen = f"{r['images_real']:,.0f} / {r['images_synthetic']:,.0f}" if r.get("steps") else ""
    flag = r.get("leak_flag") or ("no leak" if r.get("provenance_kind") else "–")
    source = f"{r.get('provenance_kind') or '–'}; {flag}"
    cpu = f"{r['cpu_minutes_per_cell']:.1f} ({r['wall_minutes_per_cell']:.1f})" if r.get("cpu_minutes_per_cell") else ""
    return (f"| {r['test_set']} | {r['arm']} | {r['fraction']} | {auroc} | {delta} | {seeds} | {budget} | {seen} | "
            f"{source} | {cpu} |")


def table(results: dict) -> str:
    lines = ["| test | arm | fraction | AUROC ± SD [hier. CI] (case-only CI) | ΔAUROC [hier. CI], p, Holm p | Δ per seed "
             "| steps (best) | seen real / synth | synthetic from; leak flag | CPU (wall) min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [r for r in results["summary"] if r.get("epsilon") is None]
    order = {name: i for i, name in enumerate(dict.fromkeys(r["arm"] for r in rows))}
    rows.sort(key=lambda r: (r["test_set"] != "test", r["test_set"], r["fraction"], order[r["arm"]]))
    return "\n".join(lines + [_row(r) for r in rows])


def generators(folder: Path) -> str:
    lines = ["| generator | records (patients) | seed | steps | CPU min (wall) |", "|---|---:|---:|---:|---:|"]
    for done in sorted(folder.glob("*/generator.json")):
        g = json.loads(done.read_text())
        lines.append(f"| {done.parent.name} | {g['n_records']} ({g['n_patients']}) | {g['seed']} | {g['steps']} | "
                     f"{g['cpu_seconds'] / 60:.1f} ({g['wall_seconds'] / 60:.1f}){' resumed' if g.get('resumed') else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--generators", type=Path)
    args = parser.parse_args()
    print(table(json.loads(args.results.read_text())))
    if args.generators:
        print()
        print(generators(args.generators))


if __name__ == "__main__":
    main()
