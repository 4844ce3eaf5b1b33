"""Command ``evaluate``: fidelity, diversity and memorisation, or SIFID (issue 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from oncosynth.cli.app import app


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
    frd_workers: int = typer.Option(1, "--frd-workers",
                                    help="Processes for radiomics extraction (either backend; CPU)."),
    frd_backend: str = typer.Option("batched", "--frd-backend",
                                    help="FRD features: batched (torch, equal to PyRadiomics, CPU or GPU) or "
                                         "pyradiomics (the reference, one image at a time)."),
    threshold: float = typer.Option(0.3, "--threshold", help="Memorisation threshold on the nearest-neighbour ratio."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="A classifier trained on real images "
                                              "(a train-classifier run or a study cell's model/): adds the class "
                                              "signal, the AUROC of its score on the synthetic images against their "
                                              "classes, beside the same on --real."),
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
                                           ("--frd-backend", frd_backend != "batched"),
                                           ("--threshold", threshold != 0.3),
                                           ("--classifier", classifier is not None)) if given]
        if unused:
            raise ConfigError(f"option(s) {', '.join(unused)} do not apply to --sifid")
        # the library resolves the device once, where the feature network is made
        result = evaluate_sifid(real, synthetic, feature_net=feature_net, out=out, size=size, device=device)
        typer.echo(f"feature net: {result['feature_net']}")
        typer.echo(json.dumps({"n_real": result["n_real"], "n_synthetic": result["n_synthetic"],
                               "sifid_mean": result["mean"],
                               "per_real": {r["real"]: round(r["mean"], 6) for r in result["per_real"][:20]}},
                              indent=2))
        typer.echo(f"written: {out / 'sifid.json'}, {out / 'sifid.csv'}")
        return

    metrics = evaluate(real, synthetic, train=train, feature_net=feature_net, out=out, size=size,
                       label_from_name=label_from_name, compute_frd=not no_frd, frd_workers=frd_workers,
                       frd_backend=frd_backend, threshold=threshold, device=device, seed=seed,
                       classifier=classifier)
    overall = metrics["results"]["overall"]
    shown = {k: overall[k] for k in ("fid", "kid", "precision", "recall", "density", "coverage", "frd",
                                     "frd_backend", "ms_ssim_synthetic", "memorised_fraction") if k in overall}
    typer.echo(f"feature net: {metrics['feature_net']}")
    typer.echo(json.dumps(shown, indent=2))
    for role, row in (metrics.get("class_signal") or {}).items():
        if isinstance(row, dict):
            typer.echo(f"class signal ({role}): AUROC {row['auroc']:.3f}, accuracy {row['accuracy']:.3f} "
                       f"on {row['n']} images")
    typer.echo(f"written: {out / 'metrics.json'}, {out / 'evaluation.html'}")
