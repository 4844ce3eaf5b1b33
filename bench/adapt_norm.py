"""BatchNorm adaptation to the test site (AdaBN) on a finished study's saved classifiers (issue 18).

For every finished non-DP cell of the named arms that kept its model (``save_models: true``),
each test set is scored three ways:

- ``none``: the model as trained (must equal the study's own predictions: checked);
- ``cross-fit``: patients split in two folds; each fold scored by a copy whose BatchNorm
  statistics were re-estimated on the other fold's images only (no image's own pixels
  and no label of the test set are used to score it);
- ``transductive``: statistics re-estimated on the whole test set, then scored on it.

The Δ against ``none`` uses the study's intervals (hierarchical bootstrap: seeds, then cases).

  PYTHONPATH=src .venv/bin/python bench/adapt_norm.py bench/out/best-cbis-mix --arm real \
      --json bench/results/adapt-norm-best-cbis64.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import oncosynth.study.stats as stats
from oncosynth.classifiers import load_classifier, predict_proba
from oncosynth.classifiers.adapt import adapt_batchnorm, cross_fitted_proba
from oncosynth.data.cache import cached_tensors
from oncosynth.data.loaders import load_dataset
from oncosynth.study.cells import read_prediction_uids, read_predictions
from oncosynth.study.inputs import positive_index

from compare_arms import finished_cells  # bench/ is on the path when this file runs as a script

MODES = ("none", "cross-fit", "transductive")


def _test_sets(config: dict) -> dict[str, tuple]:
    """name -> (uint8 images, patient ids, uids) in the study's own order, from its recorded config."""
    data = config["data"]
    main = load_dataset(data["path"], format=data["format"], label_from_name=data["label_from_name"],
                        patients_csv=data["patients_csv"])
    sets = {"test": main.split(data["test_split"])}
    for test in config["external_tests"]:
        external = load_dataset(test["path"], format=test["format"], label_from_name=test["label_from_name"])
        sets[test["name"]] = external.split(test["split"]) if test["split"] else external
    out = {}
    for name, dataset in sets.items():
        images, _ = cached_tensors(dataset, data["size"], data["channels"], progress=False)
        out[name] = (images, [r.patient for r in dataset.records], [r.uid for r in dataset.records])
    return out


def score(study_out: Path, arms: list[str], folds: int, resamples: int) -> list[dict]:
    config = json.loads((study_out / "config.json").read_text())
    tests = _test_sets(config)
    positive_class = config["data"]["positive_class"]
    rows = []
    for arm in arms:
        cells = {key: folder for key, folder in finished_cells(study_out, arm).items() if (folder / "model").is_dir()}
        if not cells:
            raise SystemExit(f"{study_out}: no finished cell of arm '{arm}' with a saved model (save_models: true)")
        for fraction in sorted({f for f, _ in cells}):
            probs = {(name, mode): {} for name in tests for mode in MODES}
            labels = {}
            for (f, seed), folder in sorted(cells.items()):
                if f != fraction:
                    continue
                model = load_classifier(folder / "model")
                classes = model.classes
                positive = positive_index(classes, positive_class)
                for name, (images, patients, uids) in tests.items():
                    expected = folder / f"predictions_{name}.csv"
                    if read_prediction_uids(expected) != uids:
                        raise SystemExit(f"{expected}: test cases differ from the study config's '{name}' set")
                    labels[name], recorded = read_predictions(expected, classes)
                    plain = predict_proba(model, images)
                    if not np.allclose(plain, recorded, atol=1e-4):
                        raise SystemExit(f"{folder}: the saved model does not reproduce predictions_{name}.csv")
                    probs[(name, "none")][seed] = plain
                    probs[(name, "cross-fit")][seed] = cross_fitted_proba(model, images, patients, folds)
                    probs[(name, "transductive")][seed] = predict_proba(adapt_batchnorm(model, images), images)
                    print(f"{arm} f={fraction:g} seed {seed} {name}: " + ", ".join(
                        f"{m} {stats.headline_auroc(labels[name], probs[(name, m)][seed], positive):.3f}"
                        for m in MODES), flush=True)
            for name in tests:
                index = stats.bootstrap_indices(len(labels[name]), resamples, seed=0)
                for mode in MODES:
                    per_seed = {s: stats.headline_auroc(labels[name], p, positive)
                                for s, p in sorted(probs[(name, mode)].items())}
                    row = {"arm": arm, "fraction": fraction, "test_set": name, "mode": mode,
                           "auroc_per_seed": per_seed, "auroc_mean": float(np.mean(list(per_seed.values())))}
                    if mode != "none":
                        row.update(stats.paired_comparison(labels[name], probs[(name, mode)],
                                                           probs[(name, "none")], positive, index, resamples))
                    rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_out", type=Path)
    parser.add_argument("--arm", action="append", required=True, help="arm(s) to score (repeat)")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = score(args.study_out, args.arm, args.folds, args.resamples)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    print("| arm | test | BatchNorm statistics | AUROC, mean (per seed) | Δ vs as trained [hier. CI], p |")
    print("|---|---|---|---|---|")
    for r in rows:
        seeds = ", ".join(f"{v:.3f}" for v in r["auroc_per_seed"].values())
        delta = "reference" if r["mode"] == "none" else \
            f"{r['delta_auroc']:+.3f} [{r['delta_low_hier']:+.3f}, {r['delta_high_hier']:+.3f}], {r['p_hier']:.3f}"
        print(f"| {r['arm']} | {r['test_set']} | {r['mode']} | {r['auroc_mean']:.3f} ({seeds}) | {delta} |")


if __name__ == "__main__":
    main()
