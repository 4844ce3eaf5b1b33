"""The style-transfer sweep: the paper's three one-factor studies around the baseline.

Content layer, optimisation steps and content/style weight ratio are each
varied alone for a few random pairs, all optimised in one batch; one image grid
per factor and ``sweep.json`` record the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from oncosynth.errors import ConfigError
from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer
from oncosynth.io import check_output_folder, save_grid, write_json
from oncosynth.quality.campaign import _image_tensors, _pairs, _resolve_feature_net

SWEEP_DEFAULTS = {"content_layer": ("conv_1", "conv_2", "conv_3", "conv_4", "conv_5"),
                  "steps": (150, 250, 500, 1000),
                  "content_weight": (0.1, 1.0, 10.0, 100.0, 200.0)}


def run_style_sweep(data, out: str | Path, content_class: str = "benign", style_class: str = "malignant",
                    feature_net: str | None = None, classifier: str | Path | None = None,
                    anomaly: str | Path | None = None, split: str = "train", n_pairs: int = 2,
                    size: int | None = None, seed: int = 0, baseline: StyleSettings | None = None,
                    values: dict[str, tuple] | None = None, device: str = "cpu",
                    data_format: str | None = None) -> dict[str, Any]:
    """The paper's three one-factor studies (content layer, steps, content/style weight ratio), each around
    the baseline, for ``n_pairs`` random pairs, all optimised in one batch. Writes one grid per factor
    (rows: pairs; columns: content, style, then the factor's values) and ``sweep.json``."""
    from oncosynth.data import as_dataset
    from oncosynth.runtime.devices import resolve_device

    out = check_output_folder(Path(out), "--out")  # before any work
    baseline = baseline or StyleSettings()
    values = {**SWEEP_DEFAULTS, **(values or {})}
    dataset = as_dataset(data, format=data_format)
    dataset.class_index(content_class)
    dataset.class_index(style_class)
    part = dataset.split(split)
    contents = [r for r in part.records if r.label == content_class]
    styles = [r for r in part.records if r.label == style_class]
    if not contents or not styles:
        raise ConfigError(f"split '{split}' needs images of both '{content_class}' and '{style_class}'")
    transfer = StyleTransfer(_resolve_feature_net(feature_net, classifier, anomaly), device=resolve_device(device))
    jobs: list[tuple[int, str, Any, StyleSettings]] = []
    pairs = _pairs(contents, styles, n_pairs, seed)
    for p in range(n_pairs):
        for factor in ("content_layer", "steps", "content_weight"):
            for value in values[factor]:
                jobs.append((p, factor, value, baseline.with_(**{factor: value})))
    transfer.check([j[3] for j in jobs])
    from oncosynth.data.records import Record

    content = _image_tensors([Record(**p["content"]) for p in pairs], size, None)
    style = _image_tensors([Record(**p["style"]) for p in pairs], content.shape[-1], content.shape[1])
    index = [j[0] for j in jobs]
    result = transfer.run(content[index], style[index], [j[3] for j in jobs])
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for factor in ("content_layer", "steps", "content_weight"):
        tiles = []
        for p in range(n_pairs):
            tiles += [content[p], style[p]]
            tiles += [result.images[k] for k, j in enumerate(jobs) if j[0] == p and j[1] == factor]
        path = out / f"sweep-{factor.replace('_', '-')}.png"
        save_grid(torch.stack(tiles), path, nrow=2 + len(values[factor]))
        files[factor] = str(path)
    summary = {"pairs": [{"content": p["content"]["source"], "style": p["style"]["source"]} for p in pairs],
               "baseline": baseline.to_dict(), "values": {k: list(v) for k, v in values.items()},
               "columns": "content, style, then the factor's values in order", "grids": files,
               "feature_net": transfer.features.name, "seconds": result.seconds,
               "final_loss": [{"pair": j[0], "factor": j[1], "value": j[2], "total": float(result.total_loss[k]),
                               "content": float(result.content_loss[k]), "style": float(result.style_loss[k])}
                              for k, j in enumerate(jobs)]}
    if classifier:
        from oncosynth.quality.gates import ClassifierGate

        gate = ClassifierGate(classifier, content_class, style_class)
        for row, prob in zip(summary["final_loss"], gate.style_probability(result.images)):
            row["classifier_prob"] = float(prob)
    write_json(out / "sweep.json", summary)
    return summary
