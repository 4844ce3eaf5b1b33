"""Collecting finished cells into result rows: seed summaries, bootstrap intervals, paired ΔAUROC."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from oncosynth.io import atomic_write
import oncosynth.study.stats as stats
from oncosynth.study.cells import Cell, read_predictions
from oncosynth.study.config import StudyConfig


def aggregate(config: StudyConfig, records: list[dict], out: Path, classes: list[str],
              positive: int) -> list[dict]:
    """One row per (test set, variant, fraction): seed mean ± std, bootstrap intervals, paired ΔAUROC."""
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["variant"], record["fraction"]), []).append(record)
    test_names = list(records[0]["metrics"]) if records else []
    for test in test_names:
        predictions = {}
        for key, members in groups.items():
            loaded = [read_predictions(out / "cells" / m["cell"] / f"predictions_{test}.csv", classes)
                      for m in sorted(members, key=lambda m: m["seed"])]
            predictions[key] = (loaded[0][0], {m["seed"]: p for m, (_, p) in zip(
                sorted(members, key=lambda m: m["seed"]), loaded)})
        n_cases = len(next(iter(predictions.values()))[0])
        index = stats.bootstrap_indices(n_cases, config.bootstrap, seed=0)
        for (variant, fraction), members in groups.items():
            labels, by_seed = predictions[(variant, fraction)]
            first = members[0]
            row: dict[str, Any] = {"test_set": test, "arm": first["arm"], "kind": first["kind"],
                                   "variant": variant, "epsilon": first["epsilon"], "fraction": fraction,
                                   "seeds": len(members)}
            for metric in first["metrics"][test]:
                row[f"{metric}_mean"], row[f"{metric}_std"] = stats.summarise_seeds(
                    [m["metrics"][test][metric] for m in members])
            for metric in ("auroc", "auprc"):
                row[f"{metric}_low"], row[f"{metric}_high"] = stats.seed_mean_interval(
                    labels, list(by_seed.values()), positive, index, metric)
            reference = _reference_key(config, groups, first, fraction)
            if reference is not None and reference != (variant, fraction):
                ref_seeds = predictions[reference][1]
                common = sorted(set(by_seed) & set(ref_seeds))
                row.update(stats.paired_difference(labels, [by_seed[s] for s in common],
                                                   [ref_seeds[s] for s in common], positive, index))
                row["reference"] = reference[0]
            spent = [m["train"]["epsilon_spent"] for m in members if m["train"]["epsilon_spent"] is not None]
            row["epsilon_spent"] = float(np.mean(spent)) if spent else None
            row["cpu_minutes_per_cell"] = float(np.mean([m["cpu_seconds"] for m in members]) / 60)
            row["wall_minutes_per_cell"] = float(np.mean([m["wall_seconds"] for m in members]) / 60)
            rows.append(row)
    return rows



def _reference_key(config: StudyConfig, groups: dict, record: dict, fraction: float):
    """The `real` arm at the same fraction and privacy budget, if the study has one."""
    for arm in config.arms:
        if arm.kind == "real":
            cell = Cell(arm, record["epsilon"], fraction, 0)
            if (cell.variant, fraction) in groups:
                return (cell.variant, fraction)
    return None



def write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})

