"""Command ``demo``: the whole pipeline on the embedded phantom data."""

from __future__ import annotations

from pathlib import Path

import typer

from oncosynth.cli.app import app


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("oncosynth-demo"), "--out", help="Folder for every demo output."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the pipeline end to end on the embedded phantom data."""
    from oncosynth.demo import run_demo

    run_demo(out, seed=seed)
