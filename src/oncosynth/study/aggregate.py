"""Collecting finished cells into result rows: seed summaries, bootstrap intervals, paired ΔAUROC.

Every interval comes twice: resampling test cases only (``*_low``/``*_high``) and
hierarchically, seeds then test cases (``*_low_hier``/``*_high_hier``, the headline). Each
row also carries its training budget (steps, images seen) and where its synthetic images
came from (provenance and the leak flag), so a reader sees both beside the numbers.
"""

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
            seed_index = stats.seed_draws(len(by_seed), config.bootstrap, seed=1)
            for metric in ("auroc", "auprc"):
                row[f"{metric}_low"], row[f"{metric}_high"] = stats.seed_mean_interval(
                    labels, list(by_seed.values()), positive, index, metric)
                row[f"{metric}_low_hier"], row[f"{metric}_high_hier"] = stats.hierarchical_interval(
                    labels, list(by_seed.values()), positive, index, seed_index, metric)
            reference = _reference_key(config, groups, first, fraction)
            if reference is not None and reference != (variant, fraction):
                row.update(stats.paired_comparison(labels, by_seed, predictions[reference][1], positive, index,
                                                   config.bootstrap))
                row["reference"] = reference[0]
            row.update(_budget(members))
            row.update(_origin(members))
            spent = [m["train"]["epsilon_spent"] for m in members if m["train"]["epsilon_spent"] is not None]
            row["epsilon_spent"] = float(np.mean(spent)) if spent else None
            row["cpu_minutes_per_cell"] = float(np.mean([m["cpu_seconds"] for m in members]) / 60)
            row["wall_minutes_per_cell"] = float(np.mean([m["wall_seconds"] for m in members]) / 60)
            rows.append(row)
    _holm_per_family(rows)
    _compare_budgets(rows)
    return rows


def _budget(members: list[dict]) -> dict[str, Any]:
    """Mean optimiser steps, images seen (real, synthetic) and best step over the seeds of a row."""
    train = [m["train"] for m in members]
    steps = [t.get("steps") for t in train]
    if any(s is None for s in steps):  # cells from before budgets were recorded
        return {"budget": "epochs", "steps": None, "images_real": None, "images_synthetic": None, "best_step": None}
    return {"budget": train[0].get("budget", "epochs"), "steps": float(np.mean(steps)),
            "images_real": float(np.mean([t["images_seen"]["real"] for t in train])),
            "images_synthetic": float(np.mean([t["images_seen"]["synthetic"] for t in train])),
            "best_step": float(np.mean([t["best_step"] for t in train]))}


def _origin(members: list[dict]) -> dict[str, Any]:
    """Where the row's synthetic images came from, and the worst leak over its seeds."""
    found = [m.get("provenance") for m in members]
    if not any(found):
        return {"provenance": None, "provenance_kind": None, "leak_flag": None, "outside_cell": None}
    worst = max(found, key=lambda p: p["outside_cell"])
    kind = found[0]["kind"]
    if kind == "in-study":
        sizes = [p["n_images"] for p in found]
        text = f"trained in-study on the cell's own {min(sizes)}–{max(sizes)} records" if min(sizes) != max(sizes) \
            else f"trained in-study on the cell's own {sizes[0]} records"
    elif kind == "manifest":
        text = "folder/generator with a manifest" + (f" ({worst['n_images']} images)" if worst["n_images"] else "")
    else:
        text = "provenance unknown (no manifest)"
    return {"provenance": text, "provenance_kind": kind, "leak_flag": worst["flag"] or None,
            "outside_cell": worst["outside_cell"]}


def _holm_per_family(rows: list[dict]) -> None:
    """Holm-adjust the hierarchical p-values of the arms compared with one reference
    (same test set, fraction and privacy budget)."""
    families: dict[tuple, list[dict]] = {}
    for row in rows:
        if "p_hier" in row:
            families.setdefault((row["test_set"], row["fraction"], row["epsilon"]), []).append(row)
    for family in families.values():
        for row, adjusted in zip(family, stats.holm([r["p_hier"] for r in family])):
            row["p_holm"] = adjusted


def _compare_budgets(rows: list[dict]) -> None:
    """Steps relative to the reference arm (1.0: an equal budget); the report warns when it is not."""
    by_key = {(r["test_set"], r["variant"], r["fraction"]): r for r in rows}
    for row in rows:
        ref = by_key.get((row["test_set"], row.get("reference"), row["fraction"]))
        if ref is not None and row["steps"] and ref["steps"]:
            row["steps_vs_reference"] = row["steps"] / ref["steps"]



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

