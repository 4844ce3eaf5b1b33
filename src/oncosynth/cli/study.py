"""Command ``study``: a classifier-utility study grid (issue 3)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from oncosynth.cli.app import app, executor_options


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
    allow_leakage: bool = typer.Option(False, "--allow-leakage",
                                       help="Run although a patient has images in two splits (the report says so)."),
) -> None:
    """Run a classifier-utility study grid; writes results.json, results.csv, predictions and report.html."""
    from oncosynth.study import run_study

    options = executor_options(executor, workers, ray_address, retries)
    report = run_study(config, out, device=device, executor=executor, executor_options=options,
                       threads_per_cell=cpus_per_cell, distributed=distributed, gpus_per_cell=gpus_per_cell,
                       allow_leakage=allow_leakage)
    if not distributed or os.environ.get("RANK", "0") == "0":
        typer.echo(f"report written to {report}")
