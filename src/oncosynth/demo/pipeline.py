"""``oncosynth demo``: the whole pipeline on the embedded phantom data.

phantom -> summary -> conditional GAN -> synthetic images -> utility study
(real vs real+synthetic) -> fidelity/privacy evaluation, all under one folder.
Every step resumes: finished outputs are kept and reused on a re-run.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from rich.console import Console

from oncosynth.data import load_dataset
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.data.summary import render_summary, summarise
from oncosynth.demo.lanes import plan_lanes, side_lane, side_settings, start_side_lane
from oncosynth.io import write_json

console = Console()

# Sized to run end to end in well under 15 minutes on 2 CPU cores.
DEMO_PHANTOM = dict(n=600, malignant_fraction=0.4, size=64, difficulty="medium")
DEMO_GAN_STEPS = 1500
DEMO_SYNTHETIC_PER_CLASS = 120


def _step(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def _done(what: str, path: Path, started: float) -> None:
    console.print(f"{what}: {path} ({time.perf_counter() - started:.0f} s)")


def run_demo(out: str | Path = "oncosynth-demo", seed: int = 0) -> Path:
    from oncosynth.demo.generators import demo_train
    from oncosynth.demo.study import demo_study
    from oncosynth.generators import generate_images
    from oncosynth.metrics.evaluate import evaluate

    from oncosynth.io import check_output_folder

    out = check_output_folder(Path(out).resolve())
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    console.print(f"oncosynth demo: every output goes under {out}")

    t = _step("1/6 phantom data set")
    phantom_dir = write_phantom(out / "phantom", PhantomConfig(seed=seed, **DEMO_PHANTOM))
    _done("phantom", phantom_dir, t)

    t = _step("2/6 data summary")
    dataset = load_dataset(phantom_dir)
    summary = summarise(dataset, progress=False)
    write_json(out / "phantom-summary.json", summary)
    render_summary(summary)
    _done("summary", out / "phantom-summary.json", t)

    # on a shared machine (one torch thread here) a second process takes what needs nothing from the main lane
    lanes = plan_lanes()
    side = start_side_lane(lanes, phantom_dir, out, seed, side_settings())
    if side is not None:
        console.print(f"SinGAN, the diffusion model and the study's real-only cells run in a second process, "
                      f"beside the next steps ({lanes.threads} CPU thread(s) per process)")

    t = _step("3/6 train a conditional GAN (MCGAN, width 16)")
    gan_dir = out / "gan"
    demo_train(dataset, gan_dir, seed=seed, steps=DEMO_GAN_STEPS)
    _done("generator run (sample grids in samples/)", gan_dir, t)

    t = _step("4/6 generate synthetic images")
    synthetic_dir = out / "synthetic"
    expected = DEMO_SYNTHETIC_PER_CLASS * len(dataset.classes)
    if _manifest_rows(synthetic_dir) != expected:  # a finished earlier run is reused as it is
        generate_images(gan_dir, synthetic_dir, n=DEMO_SYNTHETIC_PER_CLASS, class_names=dataset.classes,
                        seed=seed)
    _done("synthetic images + manifest", synthetic_dir, t)

    t = _step("5/6 utility study: real vs real+synthetic, 2 seeds")
    if side is not None:  # it trains the real-only cells; the others then take both lanes
        if not side.done():
            console.print("waiting for the second process (SinGAN, DDPM, real-only cells)")
        finished_side = side.result()
        console.print(f"second process: its steps took {finished_side['finished_at']:.0f} s")
    study_report = demo_study(out / "study", phantom_dir, synthetic_folder=synthetic_dir,
                              workers=lanes.count if side is not None else 0, threads_per_cell=lanes.threads)
    _done("study report", study_report, t)

    t = _step("6/6 fidelity, diversity and memorisation")
    encoder = _real_arm_classifier(out / "study")
    metrics = evaluate(dataset.split("test"), synthetic_dir, train=dataset.split("train"),
                       feature_net=f"encoder:{encoder}", out=out / "evaluation", label_from_name=True,
                       frd_max_images=20, progress=False)
    _done("evaluation report", out / "evaluation" / "evaluation.html", t)
    overall = metrics["results"]["overall"]
    console.print("synthetic vs real test images: " + ", ".join(
        f"{k}={overall[k]:.3g}" for k in ("frd", "fid", "precision", "recall", "memorised_fraction")
        if isinstance(overall.get(k), (int, float))) + f" (features: {overall.get('feature_net')})")

    t = _step("+ style transfer with the anomaly and classifier gates, a few phantom pairs (issue 5)")
    from oncosynth.demo.style_transfer import demo_style_transfer

    style = demo_style_transfer(out / "style-transfer", phantom_dir, classifier=encoder, seed=seed)
    console.print(f"style transfer: {style['accepted']} accepted of {style['pairs']} pairs in {style['trials']} "
                  f"trials (rejections: {style['rejected_by']})")
    _done("accepted images + manifest of every trial", out / "style-transfer" / "accepted", t)

    t = _step("+ SinGAN from one phantom image (issue 6) and a diffusion model (DDPM) with the memorisation "
              "guard (issue 19)")
    if side is None:
        finished_side = side_lane(str(phantom_dir), str(out), seed, side_settings(), lanes.threads, study=False)
    else:
        console.print("(trained in the second process, beside the GAN)")
    console.print(f"SinGAN samples (samples-grid.png: training image first): {finished_side['singan']} "
                  f"({finished_side['singan_seconds']:.0f} s)")
    ddpm = finished_side["ddpm"]
    console.print(f"ddpm: {ddpm['images']} images, {ddpm['rejected']} flagged as training copies and replaced; "
                  f"samples + manifest in {ddpm['folder']}, sample grid in ddpm/run/samples/ "
                  f"({finished_side['ddpm_seconds']:.0f} s)")
    _done("SinGAN and DDPM", out / "ddpm", t)

    console.rule()
    console.print(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s; outputs under {out}")
    console.print(f"  study report:      {study_report}")
    console.print(f"  evaluation report: {out / 'evaluation' / 'evaluation.html'}")
    return out


def _manifest_rows(folder: Path) -> int:
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        return 0
    with open(manifest, newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _real_arm_classifier(study_dir: Path) -> Path:
    """The first seed's real-only classifier: the domain encoder for FID and memorisation."""
    results = json.loads((study_dir / "results.json").read_text())
    cell = next(c for c in results["cells"] if c["kind"] == "real")
    return study_dir / "cells" / cell["cell"] / "model"
