"""What a study's in-study generators gave their cells: memorisation of the cell's own records, class signal.

    PYTHONPATH=src python bench/instudy_generator_check.py bench/study_best_cbis_ddpm_f01.yaml \
        --out bench/out/best-cbis-ddpm-f01 --arm real+ddpm-instudy-mix0.25 \
        --classifier CELL0/model --classifier CELL1/model --json bench/results/X.json --grid bench/X.png

For every (fraction, seed) of the arm, the generator trained on that cell's records is loaded and
sampled exactly as the cell sampled it (same counts per class, same seed), so the images checked are
the images the classifier trained on. Two numbers per cell:
- memorisation in pixel space against the cell's own training records (``--reject-memorised``'s
  check: the share of images closer to one training image than 30 % of the typical distance between
  two patients, and closer than any real image is to another patient's);
- the class signal under each ``--classifier`` (trained on real images, selected on validation);
- the period-2 amplitude (``metrics.artefacts``: the 2-pixel checkerboard of a patched U-Net) of the
  synthetic images beside that of the cell's own real images.
The arm's ``sample`` options (e.g. ``notch``) are applied, as in the cell.
``--grid`` saves, per cell, a row of the first 8 images of each class beside 8 of the cell's own real
images of that class. Nothing is trained; the test split is not read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from oncosynth.io import save_grid
from oncosynth.metrics.artefacts import period2_amplitude
from oncosynth.metrics.class_signal import class_signal
from oncosynth.metrics.memorisation import PixelCopyCheck
from oncosynth.study.cells import plan_cells
from oncosynth.study.config import load_config
from oncosynth.study.in_study import cell_generator_key, generator_folder, is_trained, load_in_study
from oncosynth.study.inputs import prepare
from oncosynth.study.synthetic import synthetic_for_cell


def check_cell(config, prepared, cell, out: Path, classifiers: list[Path], grid: list[torch.Tensor]) -> dict:
    """One cell's numbers; appends its grid rows (per class, 8 synthetic then 8 real images) to ``grid``."""
    records = prepared.cell_records(cell.fraction, cell.seed, config.data.train_split)
    key = cell_generator_key(config, prepared, cell.arm, cell.fraction, cell.seed)
    folder = generator_folder(out, key)
    if not is_trained(folder):
        raise SystemExit(f"{folder}: not trained yet; run the study first")
    index = torch.from_numpy(prepared.fraction_index[(cell.fraction, cell.seed)])
    real, real_labels = prepared.train_images[index].float() / 255, prepared.train_labels[index]  # as the cell saw them
    started = time.perf_counter()
    images, labels = synthetic_for_cell(prepared, cell.arm, real_labels, cell.seed,
                                        config.data.size, config.data.channels, load_in_study(folder, "cpu"))
    sampling_seconds = time.perf_counter() - started
    pixels = images.float() / 255
    copies = PixelCopyCheck(real, [r.patient for r in records])
    for i in range(len(prepared.classes)):
        grid.append(torch.cat([pixels[labels == i][:8], real[real_labels == i][:8]]))
    flagged, ratio, _ = copies.check(pixels)
    names = [prepared.classes[int(i)] for i in labels]
    signals = [class_signal(c, pixels, names) for c in classifiers]
    done = json.loads((folder / "generator.json").read_text())
    return {"cell": cell.id, "generator": key, "records": len(records),
            "patients": len({r.patient for r in records}), "images": int(len(labels)),
            "per_class": {c: int((labels == i).sum()) for i, c in enumerate(prepared.classes)},
            "generator_cpu_minutes": round(done.get("cpu_seconds", float("nan")) / 60, 1),
            "memorised_share": float(flagged.mean()), "memorised": int(flagged.sum()),
            "pixel_ratio_min": float(ratio.min()), "pixel_ratio_median": float(np.median(ratio)),
            "pixel_cutoff": copies.cutoff,
            "sample_options": cell.arm.synthetic.sample, "sampling_seconds": round(sampling_seconds, 1),
            "period2_amplitude": period2_amplitude(pixels), "period2_amplitude_real": period2_amplitude(real),
            "class_signal_auroc": [s["auroc"] for s in signals],
            "class_signal_mean": float(np.mean([s["auroc"] for s in signals])) if signals else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the study's output folder")
    parser.add_argument("--arm", required=True, help="an arm whose synthetic source is `train:`")
    parser.add_argument("--classifier", type=Path, action="append", default=[])
    parser.add_argument("--seed", type=int, action="append", default=None, help="only these seeds (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grid", type=Path, help="PNG: per cell and class, 8 synthetic then 8 real images")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    arms = [a for a in config.arms if a.name == args.arm]
    if not arms or arms[0].synthetic is None or arms[0].synthetic.train is None:
        raise SystemExit(f"{args.config}: no arm '{args.arm}' with an in-study generator")
    prepared = prepare(config, progress=False)
    cells = [c for c in plan_cells(config) if c.arm.name == args.arm and c.epsilon is None
             and (args.seed is None or c.seed in args.seed)]
    rows, grid = [], []
    for cell in cells:
        rows.append(check_cell(config, prepared, cell, args.out, args.classifier, grid))
        print(json.dumps(rows[-1]))
    summary = {"config": str(args.config), "arm": args.arm, "classifiers": [str(c) for c in args.classifier],
               "cells": rows,
               "memorised_share_mean": float(np.mean([r["memorised_share"] for r in rows])),
               "period2_amplitude_mean": float(np.mean([r["period2_amplitude"] for r in rows])),
               "class_signal_mean": float(np.mean([r["class_signal_mean"] for r in rows])) if args.classifier else None}
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        save_grid(torch.cat(grid), args.grid, nrow=16)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
