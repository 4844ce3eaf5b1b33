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
    distributed: bool = typer.Option(False, "--distributed",
                                     help="Data-parallel over the processes torchrun started (issue 8); "
                                          "--batch-size is the global batch."),
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
            classes=classes or None, distributed=distributed)
    if not distributed or os.environ.get("RANK", "0") == "0":
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


# -------------------------------------------------------- study (issue 3) ----
@app.command("study")
def study(
    config: Path = typer.Argument(..., help="Study YAML (data, arms, fractions, seeds, DP epsilons, test sets)."),
    out: Path = typer.Option(Path("study-out"), "--out", help="Output folder; finished cells there are skipped."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    executor: str = typer.Option("local", "--executor", help="Where cells run (issue 8): local | ray."),
    workers: int = typer.Option(0, "--workers",
                                help="local: 0 = in this process, N = a pool of N processes; "
                                     "ray with --ray-address local: the CPUs of the private cluster."),
    ray_address: str = typer.Option("auto", "--ray-address",
                                    help="ray: auto (the cluster `ray start` made on this machine) | HOST:PORT | "
                                         "local (start a private one-machine cluster)."),
    retries: int = typer.Option(0, "--retries", help="Further attempts for a cell that fails or whose worker dies."),
    cpus_per_cell: int = typer.Option(1, "--cpus-per-cell",
                                      help="Threads (and Ray CPUs) per cell when cells run in workers on CPU."),
    gpus_per_cell: float = typer.Option(1.0, "--gpus-per-cell",
                                        help="ray with --device cuda: GPU share per cell (0.25 packs 4 cells per GPU)."),
    distributed: bool = typer.Option(False, "--distributed",
                                     help="Under torchrun: train each cell data-parallel on all processes "
                                          "(train.batch_size is the global batch); rank 0 writes."),
) -> None:
    """Run a classifier-utility study grid; writes results.json, results.csv, predictions and report.html."""
    from oncosynth.study import run_study

    options = executor_options(executor, workers, ray_address, retries)
    report = run_study(config, out, device=device, executor=executor, executor_options=options,
                       threads_per_cell=cpus_per_cell, distributed=distributed, gpus_per_cell=gpus_per_cell)
    if not distributed or os.environ.get("RANK", "0") == "0":
        typer.echo(f"report written to {report}")


def executor_options(executor: str, workers: int, ray_address: str, retries: int) -> dict:
    """CLI flags -> ``create_executor`` options (shared by every command that runs units)."""
    from oncosynth.errors import ConfigError

    if executor == "local":
        if ray_address != "auto":
            raise ConfigError("--ray-address is for --executor ray")
        return {"workers": workers, "retries": retries}
    if executor == "ray":
        if ray_address == "local":
            return {"address": None, "num_cpus": workers or None, "retries": retries}
        if workers:
            raise ConfigError("--workers sizes a private cluster (--ray-address local); a running Ray "
                              "cluster already has its own CPUs")
        return {"address": ray_address, "retries": retries}
    raise ConfigError(f"unknown --executor '{executor}'; known: local, ray")


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
