"""The study page (``report.html``): one self-contained page a person reads in a browser.

Sections: what was run; per test set the table (mean ± std over seeds, 95%
bootstrap interval with seeds and test cases resampled as the headline, paired
ΔAUROC vs `real` with Holm-adjusted p, per-seed deltas), each arm's budget
(steps, images seen) and the provenance of its synthetic images with the leak
flag, ROC curves per arm, AUROC against the data fraction; real and synthetic
samples per arm; per-cell details.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from oncosynth.io import write_text  # noqa: E402
from oncosynth.pretrain.loop import initialisation_of  # noqa: E402
from oncosynth.report.html import block, figure, image_grid, page, paragraph, section, table  # noqa: E402
from oncosynth.study.cells import read_predictions  # noqa: E402
from oncosynth.study.config import ARM_KINDS, StudyConfig  # noqa: E402
from oncosynth.study.in_study import cell_generator_key, generator_folder, load_in_study  # noqa: E402
from oncosynth.study.inputs import Prepared  # noqa: E402
from oncosynth.study.synthetic import synthetic_for_cell  # noqa: E402



def _fmt(mean: float | None, std: float | None = None, low: float | None = None, high: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.3f}"
    if std is not None:
        text += f" ± {std:.3f}"
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def _table_rows(rows: list[dict], classes: list[str]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["seeds"] < 2:  # no spread to show from one seed
            r = {k: (None if k.endswith("_std") else v) for k, v in r.items()}
        item: dict[str, Any] = {
            "arm": r["variant"], "fraction": f"{r['fraction']:g}", "seeds": r["seeds"],
            "AUROC mean ± std [95% CI]": _fmt(r["auroc_mean"], r["auroc_std"], r.get("auroc_low_hier"),
                                              r.get("auroc_high_hier")),
            "AUPRC mean ± std [95% CI]": _fmt(r["auprc_mean"], r["auprc_std"], r.get("auprc_low_hier"),
                                              r.get("auprc_high_hier")),
            "AUROC CI, cases only": _fmt(None) if r["auroc_low"] is None else f"[{r['auroc_low']:.3f}, {r['auroc_high']:.3f}]",
        }
        if "delta_auroc" in r:
            item["ΔAUROC vs " + r["reference"]] = (f"{r['delta_auroc']:+.3f} [{r['delta_low_hier']:+.3f}, "
                                                  f"{r['delta_high_hier']:+.3f}] p={r['p_hier']:.3f}, "
                                                  f"Holm p={'–' if r.get('p_holm') is None else format(r['p_holm'], '.3f')}")
            item["Δ cases only"] = f"[{r['delta_low']:+.3f}, {r['delta_high']:+.3f}] p={r['p_value']:.3f}"
            item["Δ per seed"] = ", ".join(f"s{s} {d:+.3f}" for s, d in r["per_seed_delta"].items())
        else:
            item["ΔAUROC vs real"] = "reference" if r["kind"] == "real" else "–"
            item["Δ cases only"] = item["Δ per seed"] = "–"
        item.update(_budget_cells(r))
        for metric, label in (("accuracy", "acc"), ("balanced_accuracy", "bal. acc"),
                              ("sensitivity", "sens"), ("specificity", "spec"), ("f1", "F1")):
            item[label] = _fmt(r[f"{metric}_mean"], r[f"{metric}_std"])
        if len(classes) > 2:
            for name in classes:
                item[f"AUROC {name}"] = _fmt(r[f"auroc_{name}_mean"], r[f"auroc_{name}_std"])
        item["ε spent"] = "–" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.2f}"
        item["CPU min/cell"] = f"{r['cpu_minutes_per_cell']:.1f}"
        out.append(item)
    # collapse the ΔAUROC column names into one so the table stays rectangular
    for item in out:
        keys = [k for k in item if k.startswith("ΔAUROC")]
        value = item.pop(keys[0])
        item["ΔAUROC vs real [95% CI], p"] = value
    order = ["arm", "fraction", "seeds", "AUROC mean ± std [95% CI]", "ΔAUROC vs real [95% CI], p",
             "Δ per seed", "steps", "images seen (real / synthetic)", "synthetic images from", "leak flag",
             "AUPRC mean ± std [95% CI]", "AUROC CI, cases only", "Δ cases only"]
    return [{k: item[k] for k in order + [k for k in item if k not in order]} for item in out]


def _budget_cells(r: dict) -> dict[str, str]:
    """The row's budget and the origin of its synthetic images, for the results table."""
    if r.get("steps") is None:
        steps, seen = "–", "–"
    else:
        steps = f"{r['steps']:.0f} (best {r['best_step']:.0f})"
        ratio = r.get("steps_vs_reference")
        if ratio is not None and abs(ratio - 1) > 1e-9:
            steps += f" — {ratio:.2f}× the reference's steps"
        seen = f"{r['images_real']:.0f} / {r['images_synthetic']:.0f}"
    return {"steps": steps, "images seen (real / synthetic)": seen,
            "synthetic images from": r.get("provenance") or "–", "leak flag": r.get("leak_flag") or "–"}


def _budget_note(config: StudyConfig, rows: list[dict]) -> str:
    """One sentence on whether the arms had equal optimiser steps."""
    unequal = [r for r in rows if r.get("steps_vs_reference") is not None and abs(r["steps_vs_reference"] - 1) > 1e-9]
    if config.train.steps is not None and not unequal:
        return f"Every arm trained for the same {config.train.steps} optimiser steps (validation every " \
               f"{config.train.eval_every or 'tenth of the'} steps selects the checkpoint)."
    if not unequal:
        return f"Budget: {config.train.epochs} epochs per arm."
    worst = max(unequal, key=lambda r: max(r["steps_vs_reference"], 1 / r["steps_vs_reference"]))
    return (f"Budgets differ: {config.train.epochs if config.train.steps is None else config.train.steps} "
            f"{'epochs' if config.train.steps is None else 'steps'} per arm gives arms different numbers of "
            f"optimiser steps (up to {worst['steps_vs_reference']:.2f}× the reference's, '{worst['variant']}' "
            f"at fraction {worst['fraction']:g}); a gain may then measure training length, not data. "
            "Set train.steps for equal budgets.")


def _roc_figure(test: str, records: list[dict], out: Path, classes: list[str], positive: int,
                fractions: list[float]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in records))
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.6 * len(fractions), 4.4), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        for v_index, variant in enumerate(variants):
            members = [r for r in records if r["variant"] == variant and r["fraction"] == fraction]
            for k, record in enumerate(members):
                labels, probs = read_predictions(out / "cells" / record["cell"] / f"predictions_{test}.csv", classes)
                y, score = labels == positive, probs[:, positive]
                fpr, tpr = _roc_curve(y, score)
                mean_auc = np.mean([m["metrics"][test]["auroc"] for m in members])
                ax.plot(fpr, tpr, color=colours(v_index % 10), alpha=0.8, lw=1.2,
                        label=f"{variant} ({mean_auc:.3f})" if k == 0 else None)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="1 − specificity", ylabel="sensitivity", title=f"{test}, fraction {fraction:g}",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right", title="arm (mean AUROC)", title_fontsize=7)
    fig.tight_layout()
    return figure(fig, caption=f"ROC curves on '{test}' ({classes[positive]} vs rest), one line per seed")


def _roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    last = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1]
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0, fp / max(1, (~y).sum())], np.r_[0, tp / max(1, y.sum())]


def _fraction_figure(test: str, rows: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["test_set"] == test))
    for index, variant in enumerate(variants):
        points = sorted((r["fraction"], r["auroc_mean"], r["auroc_std"]) for r in rows
                        if r["test_set"] == test and r["variant"] == variant)
        x, mean, std = (np.array(v) for v in zip(*points))
        ax.errorbar(x * (1 + 0.02 * (index - len(variants) / 2)), mean, yerr=std, marker="o", capsize=4,
                    label=variant)
    fractions = sorted({r["fraction"] for r in rows})
    if len(fractions) > 1:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    if len(fractions) == 1:
        ax.margins(x=0.5)
    low, high = ax.get_ylim()  # at least ±0.05 around the points, so tiny differences do not look large
    middle = (low + high) / 2
    ax.set_ylim(min(low, middle - 0.05), max(high, middle + 0.05))
    ax.set(xlabel="fraction of the training split" + (" (log scale)" if len(fractions) > 1 else ""), ylabel="test AUROC (mean ± std over seeds)",
           title=f"AUROC against data fraction on '{test}'")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure(fig, caption="error bars: standard deviation over seeds")


def _samples(config: StudyConfig, prepared: Prepared, out: Path) -> list[str]:
    n = config.report_samples
    if n == 0:
        return []
    parts = []
    index = torch.from_numpy(prepared.fraction_index[(max(config.fractions), config.seeds[0])])
    real_labels = prepared.train_labels[index]
    real_rows = [image_grid(prepared.train_images[index[real_labels == c][:n]].float() / 255, nrow=n,
                            caption=f"real · {name}") for c, name in enumerate(prepared.classes)]
    parts.append(section("Real training images (every arm that trains on real data)",
                         block(*real_rows), level=3))
    for arm in config.arms:
        rows = [paragraph(f"Trains on {ARM_KINDS[arm.kind].trains_on}.", "muted")]
        if arm.synthetic is not None:
            generator = None
            if arm.synthetic.train is not None:  # the in-study generator of that cell
                key = cell_generator_key(config, prepared, arm, max(config.fractions), config.seeds[0])
                generator = load_in_study(generator_folder(out, key))
            images, labels = synthetic_for_cell(prepared, arm, real_labels, config.seeds[0],
                                                config.data.size, config.data.channels, generator)
            for c, name in enumerate(prepared.classes):
                picked = images[labels == c][:n]
                rows.append(image_grid(picked.float() / 255, nrow=n, caption=f"synthetic · {name}")
                            if len(picked) else paragraph(f"no synthetic {name} images in this arm", "muted"))
        parts.append(section(f"{arm.name}", block(*rows), level=3))
    return parts


def _length(config: StudyConfig) -> str:
    train = config.train
    if train.steps is None:
        return f"{train.epochs} epochs"
    return f"{train.steps} optimiser steps" + (f" (early stop after {train.patience} evaluations without gain)"
                                                if train.patience else "")


def _recipe(train) -> str:
    """The classifier recipe in words: the preset and the options that differ from the old default."""
    parts = [f"input normalisation {train.normalise}"] if train.normalise != "none" else []
    parts += [f"EMA {train.ema}"] if train.ema is not None else []
    parts += ["flip TTA"] if train.tta else []
    parts += [f"mixup {train.mixup} / CutMix {train.cutmix}"] if train.mixup or train.cutmix else []
    parts += ["one-cycle"] if train.schedule == "one-cycle" else []
    name = f"'{train.recipe}'" if train.recipe else "the old default"
    return f"recipe {name}" + (f" ({', '.join(parts)})" if parts else "")


def write_report(path: Path, config: StudyConfig, prepared: Prepared, records: list[dict],
                 rows: list[dict], out: Path) -> Path:
    classes, positive = prepared.classes, prepared.positive
    fractions = sorted(config.fractions)
    dp_used = any(r["epsilon"] is not None for r in records)
    intro = [
        paragraph(f"Data: {config.data.path} at {config.data.size} px, {config.data.channels} channel(s); "
                  f"classes {classes}, positive class '{classes[positive]}'. Model: {config.model.backbone}"
                  f", initialised from {initialisation_of(config.model.pretrained)}"
                  f"{', frozen backbone' if config.model.freeze_backbone else ''}. "
                  f"Training: {_length(config)}, batch {config.train.batch_size}, lr {config.train.lr}, "
                  f"{_recipe(config.train)}, "
                  f"selection on validation {config.train.select_on.upper()}."),
        paragraph(f"{len(records)} cell{'s' if len(records) != 1 else ''}: arms {[a.name for a in config.arms]} × fractions {config.fractions} × "
                  f"seeds {config.seeds}" + (f" × DP ε {config.dp.epsilons} (δ={config.dp.delta:g}, "
                                               f"clip {config.dp.max_grad_norm:g})" if dp_used else "") + "."),
        paragraph(_budget_note(config, rows)),
        paragraph("Numbers are mean ± standard deviation over seeds; brackets hold the 95% bootstrap interval of "
                  "the seed-averaged value, resampling the training seeds and then the test cases "
                  f"({config.bootstrap} resamples). It is wider than the cases-only interval (also shown) when seeds "
                  "disagree, because it also counts how much the result changes when the same arm is trained "
                  "again with another seed. "
                  "ΔAUROC is paired against the `real` arm at the same fraction and privacy budget (seed with "
                  "seed, on the same resampled cases); p is the two-sided bootstrap p-value and Holm p adjusts it "
                  "for the number of arms compared with `real`. Threshold metrics use the threshold maximising "
                  "Youden's J on the validation split.", "muted"),
    ]
    if prepared.leakage:
        shown = ", ".join(f"{l['patient']} ({'/'.join(l['splits'])})" for l in prepared.leakage[:20])
        intro.insert(0, paragraph(
            f"Warning: patient leakage was allowed (data.allow_leakage). {len(prepared.leakage)} patient(s) have "
            f"images in more than one split, so these results overstate performance on new patients: {shown}"
            f"{' …' if len(prepared.leakage) > 20 else ''}.", "note"))
    body = [section("Study", *intro)]
    for test in dict.fromkeys(r["test_set"] for r in rows):
        test_rows = [r for r in rows if r["test_set"] == test]
        body.append(section(f"Test set '{test}' ({len(prepared.tests[test][1])} images)",
                            table(_table_rows(test_rows, classes), caption=f"Results on '{test}'"),
                            _roc_figure(test, records, out, classes, positive, fractions),
                            _fraction_figure(test, rows)))
    body.append(section("Samples per arm", paragraph(
        f"First {config.report_samples} training images per class at fraction {max(fractions):g}, seed "
        f"{config.seeds[0]}, and the synthetic images that arm adds.", "muted"), *_samples(config, prepared, out)))
    cell_rows = [{"cell": r["cell"], "AUROC (test)": round(r["metrics"]["test"]["auroc"], 4),
                  "threshold": round(r["threshold"], 4), "best evaluation": r["train"]["best_epoch"],
                  "evaluations": r["train"]["epochs_run"], "steps": r["train"].get("steps", "–"),
                  "best step": r["train"].get("best_step", "–"),
                  "seen real / synthetic": "/".join(str(v) for v in r["train"].get("images_seen", {}).values()) or "–",
                  "leak flag": (r.get("provenance") or {}).get("flag") or "–",
                  "n real": r["train"]["n_real"],
                  "n synthetic": r["train"]["n_synthetic"],
                  "ε spent": "–" if r["train"]["epsilon_spent"] is None else round(r["train"]["epsilon_spent"], 3),
                  "img/s": round(r["train"]["train_images_per_second"], 1),
                  "CPU s": round(r["cpu_seconds"], 1), "note": r["train"]["stopped_early"] or ""}
                 for r in records]
    body.append(section("Cells", table(cell_rows, caption="every trained cell (predictions in cells/<cell>/)")))
    write_text(path, page(f"oncosynth study: {config.name}", "\n".join(body)))
    return path
