"""Commands ``fit-anomaly`` and ``style-transfer``: style transfer with quality gates (issue 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from oncosynth.cli.app import app, executor_options
from oncosynth.errors import OncosynthError


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OncosynthError(f"{what}: expected comma-separated numbers, got '{text}'") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


@app.command("fit-anomaly")
def fit_anomaly(
    data: Path = typer.Option(..., "--data", help="Real images (train split: training; val split: threshold)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder of the anomaly detector."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", help="Classes to train on (repeat); default all."),
    size: Optional[int] = typer.Option(None, "--size", help="Image side (default: the data's)."),
    preset: str = typer.Option("cpu", "--preset", help="Widths: paper (64,128,256,512,512; GPU) | cpu (8,...,64)."),
    widths: Optional[str] = typer.Option(None, "--widths", help="Explicit widths, e.g. 16,32,64,128,128."),
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    percentile: float = typer.Option(95.0, "--percentile", help="Threshold: this percentile of real val scores."),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    data_format: Optional[str] = typer.Option(None, "--format"),
) -> None:
    """Train the U-Net autoencoder anomaly detector on real images and set its threshold."""
    from oncosynth.data import load_dataset
    from oncosynth.io import check_output_folder
    from oncosynth.quality import fit_anomaly_detector

    check_output_folder(out, "--out")  # before the data are read
    dataset = load_dataset(data, format=data_format)
    width_tuple = tuple(int(w) for w in _floats(widths, "--widths")) if widths else None
    detector = fit_anomaly_detector(dataset, out, classes=classes or None, size=size, preset=preset,
                                    widths=width_tuple, epochs=epochs, batch_size=batch_size, lr=lr,
                                    percentile=percentile, seed=seed, device=device)
    typer.echo(f"anomaly detector written to {out} (threshold {detector.threshold:.5g} = "
               f"{percentile:g}th percentile of real validation scores)")


@app.command("style-transfer")
def style_transfer(
    data: Path = typer.Option(..., "--data", help="Real data set; pairs are drawn from --split."),
    out: Path = typer.Option(..., "--out", help="Folder for accepted PNGs, manifest.json/csv (or the sweep grids)."),
    content_class: str = typer.Option("benign", "--content-class"),
    style_class: str = typer.Option("malignant", "--style-class"),
    accept: int = typer.Option(10, "--accept", help="Stop once this many images are accepted."),
    anomaly: Optional[Path] = typer.Option(None, "--anomaly", help="Anomaly detector checkpoint (fit-anomaly)."),
    anomaly_threshold: Optional[float] = typer.Option(None, "--anomaly-threshold", help="Override its threshold."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="Classifier checkpoint for the gate."),
    cutoff: float = typer.Option(0.7, "--cutoff", help="Accept when p(style class) >= this."),
    feature_net: Optional[str] = typer.Option(None, "--feature-net",
                                              help="vgg19:<file|download>, encoder:<checkpoint>, random-cnn:<seed>; "
                                                   "default: encoder of --classifier, else of --anomaly, else vgg19:download."),
    split: str = typer.Option("train", "--split"),
    size: Optional[int] = typer.Option(None, "--size", help="Image side (default: the content images')."),
    max_trials: int = typer.Option(7, "--max-trials"),
    max_pairs: Optional[int] = typer.Option(None, "--max-pairs", help="Default 10 x --accept."),
    content_layers: str = typer.Option("conv_1,conv_2,conv_3,conv_4,conv_5", "--content-layers",
                                       help="Retry grid: content layers."),
    steps: str = typer.Option("150,250,500,1000", "--steps", help="Retry grid: step counts."),
    content_weights: str = typer.Option("0.1,1,10,50,100,200", "--content-weights", help="Retry grid: content weights."),
    baseline_layer: str = typer.Option("conv_5", "--baseline-layer", help="Trial 1: content layer."),
    baseline_steps: int = typer.Option(250, "--baseline-steps", help="Trial 1: steps."),
    baseline_content_weight: float = typer.Option(1.0, "--baseline-content-weight"),
    style_weight: float = typer.Option(100000.0, "--style-weight"),
    style_layers: str = typer.Option("conv_1,conv_2,conv_3,conv_4,conv_5", "--style-layers"),
    lr: float = typer.Option(0.02, "--lr", help="Adam step size (pixel units)."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam (batched) | lbfgs (one pair at a time)."),
    pairs_per_unit: int = typer.Option(16, "--pairs-per-unit", help="Pairs optimised together in one work unit."),
    workers: int = typer.Option(0, "--workers", help="0: in this process; N: a pool of N processes."),
    executor: str = typer.Option("local", "--executor", help="Where the units run: local | ray (issue 8)."),
    ray_address: str = typer.Option("auto", "--ray-address", help="With --executor ray: auto | HOST:PORT | local."),
    retries: int = typer.Option(0, "--retries", help="Extra attempts for a failed unit."),
    units_per_wave: Optional[int] = typer.Option(None, "--units-per-wave",
                                                 help="Units handed to the executor at once (default: --workers, min 1)."),
    threads: int = typer.Option(1, "--threads", help="torch threads per unit."),
    sweep: bool = typer.Option(False, "--sweep", help="Instead: the three one-factor studies as image grids."),
    sweep_pairs: int = typer.Option(2, "--sweep-pairs"),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    data_format: Optional[str] = typer.Option(None, "--format"),
) -> None:
    """Style-transfer augmentation (content image of one class, style of another) with quality gates and retries."""
    from oncosynth.generators.style_transfer import StyleSettings
    from oncosynth.io import check_output_folder
    from oncosynth.quality.campaign import RetrySchedule, run_style_campaign
    from oncosynth.quality.sweep import run_style_sweep

    check_output_folder(out, "--out")  # before an executor (a Ray cluster) starts
    baseline = StyleSettings(content_layer=baseline_layer, style_layers=_names(style_layers), steps=baseline_steps,
                             content_weight=baseline_content_weight, style_weight=style_weight, lr=lr)
    if sweep:
        summary = run_style_sweep(data, out, content_class, style_class, feature_net=feature_net,
                                  classifier=classifier, anomaly=anomaly, split=split, n_pairs=sweep_pairs, size=size,
                                  seed=seed, baseline=baseline, device=device, data_format=data_format)
        typer.echo("sweep grids: " + ", ".join(summary["grids"].values()))
        return
    from oncosynth.parallel.executor import create_executor

    schedule = RetrySchedule(_names(content_layers), tuple(int(s) for s in _floats(steps, "--steps")),
                             _floats(content_weights, "--content-weights"), max_trials, baseline)
    with create_executor(executor, **executor_options(executor, workers, ray_address, retries)) as backend:
        summary = run_style_campaign(data, out, content_class, style_class, accept=accept, anomaly=anomaly,
                                     classifier=classifier, feature_net=feature_net, split=split, size=size,
                                     schedule=schedule, max_pairs=max_pairs, pairs_per_unit=pairs_per_unit,
                                     executor=backend, seed=seed, device=device, optimizer=optimizer, cutoff=cutoff,
                                     anomaly_threshold=anomaly_threshold, threads=threads,
                                     units_per_wave=units_per_wave, data_format=data_format)
    typer.echo(json.dumps({k: summary[k] for k in ("pairs", "trials", "accepted", "acceptance_rate",
                                                   "trials_per_accepted", "cpu_seconds_per_accepted")}))
    typer.echo(f"accepted images and manifest.json/manifest.csv in {out}")
