"""The study step of ``oncosynth demo``: a small study on the phantom data (≤ 3 minutes on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

from oncosynth.study.config import parse_config
from oncosynth.study.run import run_study

# the demo's study settings; the test suite shrinks them (module constants, like the other demo steps')
DEMO_STUDY_SIZE = 64
DEMO_STUDY_EPOCHS = 6


def demo_study(out: str | Path, phantom: str | Path, synthetic_folder: str | Path | None = None,
               generator: str | Path | None = None, device: str = "auto", progress: bool = True,
               workers: int = 0, threads_per_cell: int = 1, arms: str = "both", size: int | None = None,
               epochs: int | None = None) -> Path:
    """Two arms × two seeds with a tiny ResNet at 64 px on a phantom data set; returns the report path.

    The second arm is ``real+synthetic`` when synthetic images (a folder with
    the class at the end of each file name, or a generator run folder) are
    given, and ``real+oversample`` otherwise. ``workers`` > 0 trains the cells in that many
    processes of ``threads_per_cell`` torch threads each; 0 trains them here, in order.
    ``arms="real"`` trains the real-only cells only, into the same folder (a cell's result does
    not depend on the other arms, so a later run with both arms reuses them); its results and
    report cover that arm and are replaced by the run with both. ``size`` and
    ``epochs`` replace ``DEMO_STUDY_SIZE`` and ``DEMO_STUDY_EPOCHS``.
    """
    if arms not in ("both", "real"):
        raise ValueError(f"arms must be 'both' or 'real', not {arms!r}")
    if synthetic_folder is not None:
        second = {"name": "real+synthetic", "kind": "real+synthetic",
                  "synthetic": {"folder": str(synthetic_folder), "label_from_name": True, "ratio": 1.0}}
    elif generator is not None:
        second = {"name": "real+synthetic", "kind": "real+synthetic",
                  "synthetic": {"generator": str(generator), "ratio": 1.0}}
    else:
        second = {"name": "real+oversample", "kind": "real+oversample"}
    config = parse_config({
        "name": "phantom demo",
        "data": {"path": str(phantom), "size": size or DEMO_STUDY_SIZE, "channels": 1},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": epochs or DEMO_STUDY_EPOCHS, "batch_size": 32, "lr": 0.002, "warmup_epochs": 0.5},
        "arms": [{"name": "real", "kind": "real"}] + ([second] if arms == "both" else []),
        "fractions": [1.0],
        "seeds": [0, 1],
        "bootstrap": 500,
        "report_samples": 8,
        "save_models": True,  # the demo reuses the real-only classifier as the evaluation's encoder
    })
    report = run_study(config, Path(out), device=device, progress=progress,
                       executor_options={"workers": workers} if workers else None, threads_per_cell=threads_per_cell)
    if arms == "both":
        print(f"study report: {report}")
    return report
