"""Per-seed AUROC differences between arms of saved study results, for cells whose predictions are gone.

`compare_arms.py` gives the hierarchical interval, but it needs every cell's case predictions, and
those live in `bench/out`, which a new machine loses. A study's `results.json` (committed under
`bench/results/`) keeps each cell's scores, so arms of different runs of the same study config can
still be set side by side seed by seed: only when their cells are comparable, i.e. same data, same
classifier settings and a machine that reproduces the reference cells (check one cell's training
losses first; RESULTS.md says how each table did).

    PYTHONPATH=src .venv/bin/python bench/seed_deltas.py bench/results/best-cbis64-f01-ddpm.json \
        bench/results/best-cbis64-f01-ddpm60.json --reference real --json bench/results/X.json

Seeds: those every listed arm has (all arms of all files unless ``--arm``). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load_cells(paths: list[Path]) -> dict[tuple[str, float, int], dict]:
    """(arm, fraction, seed) -> cell record, later files winning; non-DP cells only."""
    cells = {}
    for path in paths:
        try:
            records = json.loads(path.read_text())["cells"]
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"{path}: not a study results.json ({error})") from None
        for cell in records:
            if cell.get("epsilon") is None:
                cells[(cell["arm"], cell["fraction"], cell["seed"])] = cell
    return cells


def seed_deltas(cells: dict, arms: list[str], reference: str, fraction: float) -> dict:
    seeds = sorted(set.intersection(*({s for (a, f, s) in cells if a == arm and f == fraction}
                                      for arm in [reference, *arms])))
    if not seeds:
        raise SystemExit(f"no seed has a cell of every arm ({', '.join([reference, *arms])}) at fraction {fraction}")
    tests = list(cells[(reference, fraction, seeds[0])]["metrics"])  # the study's order: its test split first
    rows = []
    for arm in [reference, *arms]:
        row = {"arm": arm, "fingerprints": [cells[(arm, fraction, s)]["fingerprint"] for s in seeds],
               "best_step": [cells[(arm, fraction, s)]["train"].get("best_step") for s in seeds]}
        for test in tests:
            auroc = [cells[(arm, fraction, s)]["metrics"][test]["auroc"] for s in seeds]
            ref = [cells[(reference, fraction, s)]["metrics"][test]["auroc"] for s in seeds]
            row[test] = {"auroc": auroc, "mean": statistics.mean(auroc),
                         "delta": [a - r for a, r in zip(auroc, ref)],
                         "delta_mean": statistics.mean(auroc) - statistics.mean(ref)}
        rows.append(row)
    return {"fraction": fraction, "seeds": seeds, "reference": reference, "tests": tests, "rows": rows}


def markdown(table: dict) -> str:
    tests = table["tests"]
    head = " | ".join(f"{t} AUROC, mean (per seed) | Δ {t} vs {table['reference']} (per seed)" for t in tests)
    lines = [f"| arm | {head} | best steps |", "|---" * (2 + 2 * len(tests)) + "|"]
    for row in table["rows"]:
        cells = []
        for t in tests:
            r = row[t]
            cells.append(f"{r['mean']:.3f} ({', '.join(f'{a:.3f}' for a in r['auroc'])})")
            cells.append(f"{r['delta_mean']:+.3f} ({', '.join(f'{d:+.3f}' for d in r['delta'])})")
        lines.append(f"| {row['arm']} | {' | '.join(cells)} | {', '.join(str(s) for s in row['best_step'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="study results.json files")
    parser.add_argument("--reference", default="real")
    parser.add_argument("--arm", action="append", default=None, help="arms to list (default: all)")
    parser.add_argument("--fraction", type=float, default=None, help="default: the only fraction there is")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cells = load_cells(args.results)
    if not cells:
        raise SystemExit("no cells without DP-SGD in " + ", ".join(map(str, args.results)))
    fractions = sorted({f for (_, f, _) in cells})
    if args.fraction is None and len(fractions) > 1:
        raise SystemExit(f"several fractions ({fractions}); choose one with --fraction")
    fraction = fractions[0] if args.fraction is None else args.fraction
    arms = args.arm or sorted({a for (a, f, _) in cells if f == fraction and a != args.reference})
    table = seed_deltas(cells, arms, args.reference, fraction)
    print(markdown(table))
    if args.json:
        args.json.write_text(json.dumps({"sources": [str(p) for p in args.results], **table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
