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
    method: str = typer.Option(..., "--method", help="Generator: cdcgan (alias mcgan), stylegan2-ada or singan."),
    data: Path = typer.Option(..., "--data", help="Data set folder or file (its train split is used)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, sample grids, log, final model."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", help="Classes to train on (repeat); default all."),
    size: Optional[int] = typer.Option(None, "--size", help="Image side (power of two); default: the data's, rounded up."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total training steps (default 2000; a resumed run continues to this)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default: the method's."),
    preset: Optional[str] = typer.Option(None, "--preset", help="cdcgan: paper | cpu; stylegan2-ada: small | full; singan: paper | mammo | tiny."),
    width: Optional[int] = typer.Option(None, "--width", help="cdcgan only: base channel width (paper 64)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the run's last checkpoint."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Default 500."),
    sample_every: Optional[int] = typer.Option(None, "--sample-every", help="Write a sample grid every N steps (0: never; default 500)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to TensorBoard (needs the package)."),
    data_format: Optional[str] = typer.Option(None, "--format", help="Override data layout detection."),
    distributed: bool = typer.Option(False, "--distributed",
                                     help="Data-parallel over the processes torchrun started (issue 8); "
                                          "--batch-size is the global batch."),
    class_name: Optional[str] = typer.Option(None, "--class", help="singan: the class whose images are learnt."),
    images: Optional[int] = typer.Option(None, "--images", help="singan: number of SinGANs, one per randomly chosen image (default 1)."),
    image_list: Optional[Path] = typer.Option(None, "--image-list", help="singan: file naming the images (one file name, path or uid per line)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="singan: worker processes, one SinGAN each at a time (0: in this process)."),
    scale_factor: Optional[float] = typer.Option(None, "--scale-factor", help="singan: ratio between scales (default 0.75; the mammography work used 0.8)."),
    min_size: Optional[int] = typer.Option(None, "--min-size", help="singan: coarsest scale's short side in px (default 25)."),
    max_size: Optional[int] = typer.Option(None, "--max-size", help="singan: images are shrunk to at most this side (default 250)."),
    iters: Optional[int] = typer.Option(None, "--iters", help="singan: iterations per scale (default 250; the paper 2000)."),
    sifid_net: Optional[str] = typer.Option(None, "--sifid-net", help="singan: feature net for the per-SinGAN SIFID (default random-cnn:0; 'none' skips)."),
    executor: str = typer.Option("local", "--executor", help="singan: where the SinGANs train: local | ray (issue 8)."),
    ray_address: str = typer.Option("auto", "--ray-address", help="singan with --executor ray: auto | HOST:PORT | local."),
    retries: int = typer.Option(0, "--retries", help="singan: further attempts for a SinGAN whose unit fails."),
) -> None:
    """Train a generator: a class-conditional GAN, or a group of single-image SinGANs for one class."""
    from oncosynth.data import load_dataset
    from oncosynth.errors import ConfigError
    from oncosynth.generators import create_generator, generator_class

    singan_only = {"--class": class_name, "--images": images, "--image-list": image_list, "--workers": workers,
                   "--scale-factor": scale_factor, "--min-size": min_size, "--max-size": max_size, "--iters": iters,
                   "--sifid-net": sifid_net, "--executor": None if executor == "local" else executor,
                   "--ray-address": None if ray_address == "auto" else ray_address, "--retries": retries or None}
    gan_only = {"--classes": classes or None, "--size": size, "--steps": steps, "--batch-size": batch_size,
                "--width": width, "--checkpoint-every": checkpoint_every, "--sample-every": sample_every,
                "--tensorboard": tensorboard or None, "--distributed": distributed or None}
    is_singan = generator_class(method).name == "singan"
    misplaced = [k for k, v in (gan_only if is_singan else singan_only).items() if v is not None]
    if misplaced:
        raise ConfigError(f"option(s) {', '.join(misplaced)} do not apply to --method {method}"
                          + ("" if is_singan else " (they are for --method singan)"))
    dataset = load_dataset(data, format=data_format)
    if is_singan:
        options = {"scale_factor": scale_factor, "min_size": min_size, "max_size": max_size, "iters": iters}
        if sifid_net is not None:
            options["sifid_net"] = None if sifid_net.lower() == "none" else sifid_net
        gen = create_generator(method, preset=preset, **options)
        if sifid_net is not None and sifid_net.lower() == "none":
            gen.config["sifid_net"] = None
        from oncosynth.parallel.executor import create_executor

        with create_executor(executor, **executor_options(executor, workers or 0, ray_address, retries)) as runner:
            gen.fit(dataset, out, class_name=class_name, images=images, image_list=image_list, seed=seed,
                    workers=workers or 0, resume=resume, device=device, executor=runner)
        typer.echo(f"singan: {len(gen.members)} SinGAN(s) of class '{gen.classes[0]}' in {out} "
                   f"(per-SinGAN time and SIFID in {out / 'members.csv'})")
        return
    options = {"size": size}
    if width is not None:
        options["width"] = width
    gen = create_generator(method, preset=preset, **options)
    gen.fit(dataset, out, steps=steps or 2000, batch_size=batch_size, seed=seed, device=device, resume=resume,
            checkpoint_every=checkpoint_every or 500,
            sample_every=(500 if sample_every is None else sample_every) or None, tensorboard=tensorboard,
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
    start_scale: Optional[int] = typer.Option(None, "--start-scale", help="singan only: random from this scale up, "
                                              "the training image's reconstruction below (default 0)."),
) -> None:
    """Sample images of the given classes from a trained generator."""
    from oncosynth.generators import generate_images

    options = {} if start_scale is None else {"start_scale": start_scale}
    rows = generate_images(run, out, n, class_names, seed=seed, device=device, batch_size=batch_size, **options)
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
    sifid: bool = typer.Option(False, "--sifid", help="SIFID instead: every synthetic image against every real "
                               "image (--real may be one image file); writes sifid.json and sifid.csv."),
) -> None:
    """Fidelity (FID, KID, precision/recall, FRD), diversity and memorisation of synthetic images."""
    from oncosynth.metrics.evaluate import evaluate

    if sifid:
        from oncosynth.errors import ConfigError
        from oncosynth.metrics.sifid import evaluate_sifid

        unused = [name for name, given in (("--train", train is not None), ("--label-from-name", label_from_name),
                                           ("--no-frd", no_frd), ("--frd-workers", frd_workers != 1),
                                           ("--threshold", threshold != 0.3)) if given]
        if unused:
            raise ConfigError(f"option(s) {', '.join(unused)} do not apply to --sifid")
        from oncosynth.runtime.devices import resolve_device

        result = evaluate_sifid(real, synthetic, feature_net=feature_net, out=out, size=size,
                                device=str(resolve_device(device)))
        typer.echo(f"feature net: {result['feature_net']}")
        typer.echo(json.dumps({"n_real": result["n_real"], "n_synthetic": result["n_synthetic"],
                               "sifid_mean": result["mean"],
                               "per_real": {r["real"]: round(r["mean"], 6) for r in result["per_real"][:20]}},
                              indent=2))
        typer.echo(f"written: {out / 'sifid.json'}, {out / 'sifid.csv'}")
        return

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
    from oncosynth.quality.pipeline import RetrySchedule, run_style_campaign, run_style_sweep

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
