"""Commands ``data summary`` and ``data phantom``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from oncosynth.cli.app import data_app


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
    dataset = load_dataset(path, format=format, label_from_name=label_from_name, patients_csv=patients_csv,
                           skip_bad=skip_bad, decode_all=False)
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
