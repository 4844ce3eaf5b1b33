"""The ``oncosynth`` Typer app, the entry point, and the option parsing commands share.

Expected failures (``OncosynthError``) print one line and exit with status 2;
heavy imports happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from oncosynth.errors import OncosynthError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Synthetic data augmentation for cancer imaging.")
data_app = typer.Typer(no_args_is_help=True, help="Read, check and make data sets.")
app.add_typer(data_app, name="data")


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
