"""Command ``pretrain``: a backbone pretrained without natural-image weights (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from oncosynth.cli.app import app


@app.command("pretrain")
def pretrain(
    out: Path = typer.Option(..., "--out", help="Run folder; a re-run of the same command resumes it."),
    method: str = typer.Option("simclr", "--method", help="simclr | byol | dino | mae | phantom-supervised"),
    data: Path = typer.Option(None, "--data",
                              help="Images to learn from (their train split when they have one). "
                                   "phantom-supervised without --data renders a phantom in memory."),
    extra_unlabelled: list[Path] = typer.Option([], "--extra-unlabelled",
                                                help="Further folders of images (synthetic sets, phantom, "
                                                     "any patches); labels ignored. Repeatable."),
    backbone: str = typer.Option("resnet18", "--backbone", help="timm architecture (mae: a ViT, "
                                                                "e.g. vit_tiny_patch16_224)."),
    size: int = typer.Option(64, "--size", help="Image side in pixels (use the study's data.size)."),
    steps: int = typer.Option(2000, "--steps", help="Optimiser steps."),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    normalise: str = typer.Option("none", "--normalise",
                                  help="none | standardise | percentile | equalise: per-image input normalisation; "
                                       "use the study's train.normalise."),
    options: str = typer.Option("{}", "--options", help='Method options as JSON, e.g. \'{"temperature": 0.1}\'.'),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
) -> None:
    """Pretrain a backbone; use the run folder as ``model.pretrained`` in a study."""
    from oncosynth.errors import ConfigError
    from oncosynth.pretrain import make_config, pretrain as run_pretrain
    from oncosynth.runtime import resolve_device

    try:
        method_options = json.loads(options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options: not JSON ({exc})") from None
    config = make_config(method=method, backbone=backbone, size=size, steps=steps, batch_size=batch_size,
                         lr=lr, seed=seed, normalise=normalise, options=method_options)
    run = run_pretrain(config, out, data=data, extra_unlabelled=list(extra_unlabelled),
                       device=resolve_device(device))
    typer.echo(f"pretrained backbone written to {run} (use it as model.pretrained: {run})")
