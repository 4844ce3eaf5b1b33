"""The evaluation page (``evaluation.html``): the numbers of ``evaluate`` with the pictures that explain them."""

from __future__ import annotations

import numpy as np
import torch

from oncosynth.report import html

_COLUMNS = [("n_real", "real"), ("n_synthetic", "synthetic"), ("fid", "FID"), ("kid", "KID"),
            ("precision", "precision"), ("recall", "recall"), ("density", "density"),
            ("coverage", "coverage"), ("frd", "FRD"), ("ms_ssim_synthetic", "MS-SSIM synth"),
            ("ms_ssim_real", "MS-SSIM real"), ("period2_synthetic", "2-px pattern synth"),
            ("period2_real", "2-px pattern real"), ("memorised_fraction", "flagged copies")]

_EXPLAIN = (
    "FID/KID: distance between real and synthetic feature distributions (lower is closer; KID is "
    "unbiased, ×1000 not applied). Precision: share of synthetic images inside the real manifold "
    "(fidelity); recall: share of real images covered by the synthetic manifold (variety); "
    "density/coverage: the robust variants of Naeem et al. FRD: Fréchet radiomics distance, "
    "log(d²), reference = real set. MS-SSIM: mean pairwise similarity within a set (lower = more "
    "varied; compare synthetic with real). 2-px pattern: RMS amplitude in grey levels of checkerboards and "
    "stripes that repeat every 2 pixels in 8-pixel tiles, the grid a 2x2-patched or stride-2 generator can leave "
    "(compare synthetic with real). Flagged copies: share of synthetic images closer to a "
    "training image than the memorisation threshold allows."
)


_CLASS_SIGNAL = ("How well a classifier trained on real images separates the synthetic images by the class "
                 "they were generated for. Near 0.5: the generator's classes look alike to it, and the images "
                 "teach a classifier little about the label. The real row is the scale.")


def _results_rows(metrics: dict) -> list[dict]:
    rows = []
    for scope, values in metrics["results"].items():
        row = {"scope": scope}
        for key, label in _COLUMNS:
            if key in values:
                value = values[key]
                if key == "frd" and value is None and values.get("frd_identical"):
                    value = "-inf (identical)"
                row[label] = value
        if "skipped" in values:
            row["note"] = values["skipped"]
        rows.append(row)
    return rows


def _ratio_histograms(memo_raw: dict):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    spaces = memo_raw["spaces"]
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.2 * len(spaces), 3.4), squeeze=False)
    for ax, r in zip(axes[0], spaces):
        upper = max(2.0, float(np.percentile(np.concatenate([r.ratio, r.reference_ratios]), 99.5)))
        bins = np.linspace(0, upper, 50)
        ax.hist(np.clip(r.reference_ratios, 0, upper), bins=bins, alpha=0.55, density=True,
                label="real train → other patient", color="#4a7bb7")
        ax.hist(np.clip(r.ratio, 0, upper), bins=bins, alpha=0.55, density=True,
                label="synthetic → nearest train", color="#e0803a")
        ax.axvline(memo_raw["threshold"], color="#b3202a", linestyle=":", label=f"threshold {memo_raw['threshold']}")
        ax.axvline(r.cutoff, color="#b3202a", linestyle="--", label=f"cutoff {r.cutoff:.3g}")
        ax.set_title(f"nearest-neighbour ratio ({r.name})")
        ax.set_xlabel("distance / median real-to-real NN distance")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _closest_pairs(memo_raw: dict, synth: torch.Tensor, train: torch.Tensor, train_patients, n: int = 8):
    """Two rows per block: synthetic images (top) and their nearest training image (bottom)."""
    order = np.argsort(memo_raw["min_ratio"])[:n]
    best_space = memo_raw["ratios"][order].argmin(axis=1)
    nearest = [int(memo_raw["spaces"][s].index[j]) for j, s in zip(order, best_space)]
    pairs = torch.cat([synth[torch.as_tensor(order)], train[torch.as_tensor(nearest)]])
    captions = [f"{k + 1}: ratio {memo_raw['min_ratio'][j]:.2f} ({memo_raw['spaces'][s].name}), "
                f"patient {train_patients[t]}{' FLAGGED' if memo_raw['flagged'][j] else ''}"
                for k, (j, s, t) in enumerate(zip(order, best_space, nearest))]
    return pairs, len(order), captions


def _sample_grid(images: torch.Tensor, labels: list[str], n: int = 16) -> torch.Tensor:
    classes = sorted(set(labels))
    if len(classes) <= 1:
        return images[:n]
    per = max(1, n // len(classes))
    picks = []
    labels_arr = np.array(labels)
    for c in classes:
        picks.extend(np.flatnonzero(labels_arr == c)[:per].tolist())
    return images[torch.as_tensor(picks)]


def render_evaluation(metrics: dict, sets: list, memo_raw: dict | None) -> str:
    real, synth = sets[0], sets[1]
    parts = [html.paragraph(f"Feature network: {metrics['feature_net']}  ·  images compared at "
                            f"{metrics['size']}×{metrics['size']}, {metrics['channels']} channel(s)  ·  "
                            f"created {metrics['manifest']['created']}", "muted")]
    for note in metrics["notes"]:
        parts.append(html.paragraph("Note: " + note, "note"))
    parts.append(html.section("Fidelity and diversity", html.table(_results_rows(metrics),
                 caption="Overall and per class (real = reference set)"), html.paragraph(_EXPLAIN, "muted")))
    counts = [{"set": role, "images": c["n"], **c["classes"]} for role, c in metrics["counts"].items()]
    parts.append(html.table(counts, caption="Images per set and class"))
    signal = metrics.get("class_signal")
    if signal:
        rows = [{"set": role, "images": r["n"], "AUROC": r["auroc"], "accuracy": r["accuracy"],
                 **{f"mean P({r['positive_class']}) | {c}": v for c, v in r["mean_positive_probability"].items()}}
                for role, r in signal.items() if isinstance(r, dict)]
        parts.append(html.section("Class signal", html.table(rows, caption=f"Classifier {signal['classifier']}, "
                                  "trained on real images, scoring each set against its labels"),
                                  html.paragraph(_CLASS_SIGNAL, "muted")))
    timing = [{"step": k, "seconds": v} for k, v in metrics["seconds"].items()]
    parts.append(html.table(timing, caption="Time per step"))

    parts.append(html.section("Samples",
                              html.image_grid(_sample_grid(real.images, real.labels), nrow=8,
                                              caption="real (first images of each class)"),
                              html.image_grid(_sample_grid(synth.images, synth.labels), nrow=8,
                                              caption="synthetic (first images of each class)")))

    memo = metrics.get("memorisation")
    if memo is not None and memo_raw is not None:
        train = sets[2]
        rows = [{"space": name, "typical real NN distance": s["typical_real_nn_distance"],
                 "median ratio": s["median_ratio"], "min ratio": s["min_ratio"], "cutoff": s["cutoff"],
                 "flagged": s["fraction_flagged"], "real pairs < threshold": s["real_to_real_fraction_below_threshold"],
                 "real ratio 1st pct": s["real_to_real_ratio_p01"], "real ratio min": s["real_to_real_ratio_min"]}
                for name, s in memo["spaces"].items()]
        body = [html.paragraph(
            f"{memo['n_flagged']} of {memo['n_synthetic']} synthetic images "
            f"({100 * memo['fraction_flagged']:.1f}%) are flagged as probable copies: in pixel or "
            f"feature space they are closer to a training image than {memo['threshold']} × the typical "
            f"real nearest-neighbour distance (other patients) and closer than any training image is "
            f"to another patient's (the per-space cutoff below).", "note" if memo["n_flagged"] else None),
            html.table(rows, caption="Nearest-training-image distances per space"),
            html.table([{"class": c, "synthetic images": v["n"], "flagged": v["n_flagged"]}
                        for c, v in memo.get("per_class", {}).items()], caption="Flagged per class"),
            html.figure(_ratio_histograms(memo_raw), caption="Ratios left of the dashed cutoff are flagged")]
        pairs, n, captions = _closest_pairs(memo_raw, synth.images, train.images, train.patients)
        body.append(html.image_grid(pairs, nrow=n, caption="Closest pairs: synthetic (top row) and "
                                    "its nearest training image (bottom row), closest first"))
        body.append(html.numbered_list(captions, "muted"))
        if memo["flagged"]:
            shown = [{"synthetic": e["synthetic"].split("/")[-1], **{k: v for k, v in e.items()
                      if k.endswith("_ratio") or k.endswith("_patient")}} for e in memo["flagged"][:20]]
            body.append(html.table(shown, caption=f"Flagged images (first {len(shown)}, closest first)"))
        parts.append(html.section("Memorisation (privacy)", body))
    manifest = metrics["manifest"]
    parts.append(html.section("Provenance", html.table(
        [{"key": k, "value": str(v)} for k, v in manifest.items() if k != "config"]
        + [{"key": f"config.{k}", "value": str(v)} for k, v in manifest["config"].items()])))
    return html.page("Synthetic data evaluation", "\n".join(parts))
