"""The ``oncosynth`` command line: every command is a thin call into the library.

Expected failures (``OncosynthError``) print one line and exit with status 2;
heavy imports happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from oncosynth.errors import OncosynthError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Synthetic data augmentation for cancer imaging.")
data_app = typer.Typer(no_args_is_help=True, help="Read, check and make data sets.")
app.add_typer(data_app, name="data")


# ---------------------------------------------------------------- data ----
@data_app.command("summary")
def data_summary(
    path: Path = typer.Argument(..., help="Data set folder or file (CBIS-DDSM, class folders, .npz, PCam, DICOM)."),
    format: Optional[str] = typer.Option(None, "--format", help="Override layout detection."),
    label_from_name: bool = typer.Option(False, "--label-from-name", help="Take the class from the file name's last '_' token."),
    patients_csv: Optional[Path] = typer.Option(None, "--patients-csv", help="CSV with columns file,patient."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable files and list them instead of failing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Images, patients, sizes per split and class; duplicates; the leakage check."""
    from oncosynth.data import load_dataset
    from oncosynth.data.summary import render_summary, summarise

    # the summary decodes every image anyway, so it (not the loader) does the skipping
    dataset = load_dataset(path, format=format, label_from_name=label_from_name, patients_csv=patients_csv)
    summary = summarise(dataset, skip_bad=skip_bad)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        render_summary(summary)


@data_app.command("phantom")
def data_phantom(
    out: Path = typer.Argument(..., help="Output folder (class-folder layout)."),
    n: int = typer.Option(400, "--n", help="Number of images."),
    malignant_fraction: float = typer.Option(0.5, "--malignant-fraction"),
    healthy_fraction: float = typer.Option(0.0, "--healthy-fraction", help="Share of lesion-free 'healthy' images."),
    size: int = typer.Option(64, "--size", help="Image side in pixels."),
    difficulty: str = typer.Option("medium", "--difficulty", help="easy | medium | hard"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write the procedural mammography-mass phantom data set."""
    from oncosynth.data.phantom import PhantomConfig, write_phantom

    config = PhantomConfig(n=n, malignant_fraction=malignant_fraction, healthy_fraction=healthy_fraction,
                           size=size, difficulty=difficulty, seed=seed)
    folder = write_phantom(out, config)
    typer.echo(f"phantom data set written to {folder}")


# ---------------------------------------------------------------- demo ----
@app.command("demo")
def demo(
    out: Path = typer.Option(Path("oncosynth-demo"), "--out", help="Folder for every demo output."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the pipeline end to end on the embedded phantom data."""
    from oncosynth.demo import run_demo

    run_demo(out, seed=seed)


# ------------------------------------------------- generators (issue 4) ----
@app.command("train-generator")
def train_generator(
    method: str = typer.Option(..., "--method", help="Generator: cdcgan (alias mcgan) or stylegan2-ada."),
    data: Path = typer.Option(..., "--data", help="Data set folder or file (its train split is used)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, sample grids, log, final model."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", help="Classes to train on (repeat); default all."),
    size: Optional[int] = typer.Option(None, "--size", help="Image side (power of two); default: the data's, rounded up."),
    steps: int = typer.Option(2000, "--steps", help="Total training steps (a resumed run continues to this)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default: the method's."),
    preset: Optional[str] = typer.Option(None, "--preset", help="cdcgan: paper | cpu; stylegan2-ada: small | full."),
    width: Optional[int] = typer.Option(None, "--width", help="cdcgan only: base channel width (paper 64)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the run's last checkpoint."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    sample_every: int = typer.Option(500, "--sample-every", help="Write a sample grid every N steps (0: never)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to TensorBoard (needs the package)."),
    data_format: Optional[str] = typer.Option(None, "--format", help="Override data layout detection."),
) -> None:
    """Train a class-conditional generator; resumable, checkpointed, with sample grids."""
    from oncosynth.data import load_dataset
    from oncosynth.generators import create_generator

    options = {"size": size}
    if width is not None:
        options["width"] = width
    gen = create_generator(method, preset=preset, **options)
    dataset = load_dataset(data, format=data_format)
    gen.fit(dataset, out, steps=steps, batch_size=batch_size, seed=seed, device=device, resume=resume,
            checkpoint_every=checkpoint_every, sample_every=sample_every or None, tensorboard=tensorboard,
            classes=classes or None)
    typer.echo(f"{gen.name}: trained {gen.step} steps; model in {out}")


@app.command("generate")
def generate(
    run: Path = typer.Argument(..., help="Run folder (or checkpoint folder) of a trained generator."),
    n: int = typer.Option(..., "--n", help="Images per class."),
    class_names: list[str] = typer.Option(..., "--class", help="Class to generate (repeat for several)."),
    out: Path = typer.Option(..., "--out", help="Output folder for PNGs + manifest.csv/json."),
    seed: int = typer.Option(0, "--seed", help="Image i uses latent seed seed+i."),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(64, "--batch-size"),
) -> None:
    """Sample images of the given classes from a trained generator."""
    from oncosynth.generators import generate_images

    rows = generate_images(run, out, n, class_names, seed=seed, device=device, batch_size=batch_size)
    typer.echo(f"wrote {len(rows)} images and manifest.csv to {out}")


# ------------------------------------------------------ metrics (issue 7) ----
@app.command("evaluate")
def evaluate_command(
    real: Path = typer.Option(..., "--real", help="Real reference images (any layout the data layer reads)."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic images to evaluate."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, memorisation.csv, evaluation.html."),
    train: Optional[Path] = typer.Option(None, "--train", help="Training images of the generator (memorisation check)."),
    feature_net: str = typer.Option("inception:download", "--feature-net",
                                    help="inception:<file|download>, vgg19:<file|download>, encoder:<checkpoint>, random-cnn:<seed>."),
    size: Optional[int] = typer.Option(None, "--size", help="Common image side (default: the real images' size)."),
    label_from_name: bool = typer.Option(False, "--label-from-name", help="Synthetic class from the file name's last '_' token."),
    no_frd: bool = typer.Option(False, "--no-frd", help="Skip FRD (radiomics; the slowest metric)."),
    frd_workers: int = typer.Option(1, "--frd-workers", help="Processes for radiomics extraction."),
    threshold: float = typer.Option(0.3, "--threshold", help="Memorisation threshold on the nearest-neighbour ratio."),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fidelity (FID, KID, precision/recall, FRD), diversity and memorisation of synthetic images."""
    from oncosynth.metrics.evaluate import evaluate

    metrics = evaluate(real, synthetic, train=train, feature_net=feature_net, out=out, size=size,
                       label_from_name=label_from_name, compute_frd=not no_frd, frd_workers=frd_workers,
                       threshold=threshold, device=device, seed=seed)
    overall = metrics["results"]["overall"]
    shown = {k: overall[k] for k in ("fid", "kid", "precision", "recall", "density", "coverage", "frd",
                                     "ms_ssim_synthetic", "memorised_fraction") if k in overall}
    typer.echo(f"feature net: {metrics['feature_net']}")
    typer.echo(json.dumps(shown, indent=2))
    typer.echo(f"written: {out / 'metrics.json'}, {out / 'evaluation.html'}")


# ----------------------------------------- style transfer + quality gates (issue 5) ----
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
    from oncosynth.quality import fit_anomaly_detector

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
    executor: str = typer.Option("local", "--executor", help="Executor backend (local; ray once registered)."),
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
    from oncosynth.quality.pipeline import RetrySchedule, run_style_campaign, run_style_sweep

    baseline = StyleSettings(content_layer=baseline_layer, style_layers=_names(style_layers), steps=baseline_steps,
                             content_weight=baseline_content_weight, style_weight=style_weight, lr=lr)
    if sweep:
        summary = run_style_sweep(data, out, content_class, style_class, feature_net=feature_net,
                                  classifier=classifier, anomaly=anomaly, split=split, n_pairs=sweep_pairs, size=size,
                                  seed=seed, baseline=baseline, device=device, data_format=data_format)
        typer.echo("sweep grids: " + ", ".join(summary["grids"].values()))
        return
    from oncosynth.executor import create_executor

    schedule = RetrySchedule(_names(content_layers), tuple(int(s) for s in _floats(steps, "--steps")),
                             _floats(content_weights, "--content-weights"), max_trials, baseline)
    options = {"workers": workers} if executor == "local" else {}
    with create_executor(executor, **options) as backend:
        summary = run_style_campaign(data, out, content_class, style_class, accept=accept, anomaly=anomaly,
                                     classifier=classifier, feature_net=feature_net, split=split, size=size,
                                     schedule=schedule, max_pairs=max_pairs, pairs_per_unit=pairs_per_unit,
                                     executor=backend, seed=seed, device=device, optimizer=optimizer, cutoff=cutoff,
                                     anomaly_threshold=anomaly_threshold, threads=threads,
                                     units_per_wave=units_per_wave, data_format=data_format)
    typer.echo(json.dumps({k: summary[k] for k in ("pairs", "trials", "accepted", "acceptance_rate",
                                                   "trials_per_accepted", "cpu_seconds_per_accepted")}))
    typer.echo(f"accepted images and manifest.json/manifest.csv in {out}")


# -------------------------------------------------------- study (issue 3) ----
@app.command("study")
def study(
    config: Path = typer.Argument(..., help="Study YAML (data, arms, fractions, seeds, DP epsilons, test sets)."),
    out: Path = typer.Option(Path("study-out"), "--out", help="Output folder; finished cells there are skipped."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
) -> None:
    """Run a classifier-utility study grid; writes results.json, results.csv, predictions and report.html."""
    from oncosynth.study import run_study

    report = run_study(config, out, device=device)
    typer.echo(f"report written to {report}")


def main() -> None:
    if not sys.stderr.isatty():
        # progress bars in a log file: one line every 10 s, not one per step
        os.environ.setdefault("TQDM_MININTERVAL", "10")
    try:
        app()
    except OncosynthError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
