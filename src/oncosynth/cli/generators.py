"""Commands ``train-generator`` and ``generate`` (issues 4, 19)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from oncosynth.cli.app import app, executor_options


@app.command("train-generator")
def train_generator(
    method: str = typer.Option(..., "--method", help="Generator: cdcgan (alias mcgan), stylegan2-ada, singan, ddpm, style-transfer or style-transfer-gated."),
    data: Path = typer.Option(..., "--data", help="Data set folder or file (its train split is used)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, sample grids, log, final model."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", help="Classes to train on (repeat); default all."),
    size: Optional[int] = typer.Option(None, "--size", help="Image side (power of two); default: the data's, rounded up."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total training steps (default 2000; a resumed run continues to this)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default: the method's."),
    preset: Optional[str] = typer.Option(None, "--preset", help="cdcgan: paper | cpu; stylegan2-ada: cpu | paper | paper256; singan: paper | mammo | tiny; ddpm: cpu | paper."),
    width: Optional[int] = typer.Option(None, "--width", help="cdcgan only: base channel width (paper 64)."),
    option: Optional[list[str]] = typer.Option(None, "--option", metavar="KEY=VALUE",
                                               help="cdcgan / stylegan2-ada / ddpm: any other setting, value as JSON "
                                                    "(e.g. norm=\"batch\", d_steps_per_g=1, resample=\"bilinear\"); repeatable."),
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
    allow_leakage: bool = typer.Option(False, "--allow-leakage",
                                       help="Train although a patient has images in two splits (recorded in the manifest)."),
) -> None:
    """Train a generator: a class-conditional GAN, or a group of single-image SinGANs for one class."""
    from oncosynth.data import load_dataset
    from oncosynth.errors import ConfigError
    from oncosynth.generators import create_generator, generator_class
    from oncosynth.io import check_output_folder

    singan_only = {"--class": class_name, "--images": images, "--image-list": image_list, "--workers": workers,
                   "--scale-factor": scale_factor, "--min-size": min_size, "--max-size": max_size, "--iters": iters,
                   "--sifid-net": sifid_net, "--executor": None if executor == "local" else executor,
                   "--ray-address": None if ray_address == "auto" else ray_address, "--retries": retries or None}
    gan_only = {"--classes": classes or None, "--size": size, "--steps": steps, "--batch-size": batch_size,
                "--width": width, "--option": option or None,
                "--checkpoint-every": checkpoint_every, "--sample-every": sample_every,
                "--tensorboard": tensorboard or None, "--distributed": distributed or None}
    is_singan = generator_class(method).name == "singan"
    misplaced = [k for k, v in (gan_only if is_singan else singan_only).items() if v is not None]
    if misplaced:
        raise ConfigError(f"option(s) {', '.join(misplaced)} do not apply to --method {method}"
                          + ("" if is_singan else " (they are for --method singan)"))
    check_output_folder(out, "--out")  # every method, before the data are read
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
                    workers=workers or 0, resume=resume, device=device, executor=runner,
                    allow_leakage=allow_leakage)
        typer.echo(f"singan: {len(gen.members)} SinGAN(s) of class '{gen.classes[0]}' in {out} "
                   f"(per-SinGAN time and SIFID in {out / 'members.csv'})")
        return
    options = {"size": size, **parse_options(option or [])}
    if width is not None:
        options["width"] = width
    gen = create_generator(method, preset=preset, **options)
    gen.fit(dataset, out, steps=steps or 2000, batch_size=batch_size, seed=seed, device=device, resume=resume,
            checkpoint_every=checkpoint_every or 500,
            sample_every=(500 if sample_every is None else sample_every) or None, tensorboard=tensorboard,
            classes=classes or None, distributed=distributed, allow_leakage=allow_leakage)
    if not distributed or os.environ.get("RANK", "0") == "0":
        typer.echo(f"{gen.name}: trained {gen.step} steps; model in {out}")


def parse_options(items: list[str]) -> dict:
    """``KEY=VALUE`` strings to settings; a VALUE that is not JSON is taken as a string."""
    import json

    from oncosynth.errors import ConfigError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


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
    guidance: Optional[float] = typer.Option(None, "--guidance", help="ddpm only: classifier-free guidance scale "
                                             "(>= 0; 1 = plain conditional; default: the model's)."),
    ddim_steps: Optional[int] = typer.Option(None, "--ddim-steps", help="ddpm only: DDIM sampling steps "
                                             "(1 .. the model's training diffusion steps; default: the model's)."),
    notch: Optional[float] = typer.Option(None, "--notch", help="ddpm only: window (px) of the filter that "
                                          "removes 2-pixel checkerboards; 0 = off (default: the model's)."),
    reject_memorised: Optional[Path] = typer.Option(
        None, "--reject-memorised", help="Training data (folder/file; its train split if it has one): images "
        "the memorisation check flags as copies are dropped, replaced and listed in manifest.json."),
) -> None:
    """Sample images of the given classes from a trained generator."""
    from oncosynth.generators import generate_images

    options = {key: value for key, value in (("start_scale", start_scale), ("guidance", guidance),
                                             ("steps", ddim_steps), ("notch", notch))
               if value is not None}
    rows = generate_images(run, out, n, class_names, seed=seed, device=device, batch_size=batch_size,
                           reject_memorised=reject_memorised, **options)
    typer.echo(f"wrote {len(rows)} images and manifest.csv to {out}")

