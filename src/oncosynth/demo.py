"""``oncosynth demo``: the whole pipeline on the embedded phantom data.

Every step writes under one folder and is skipped when its output already
exists, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from oncosynth.data import load_dataset
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.data.summary import render_summary, summarise
from oncosynth.io import write_json

console = Console()

# Small enough to run end to end in a few minutes on 2 CPU cores.
DEMO_PHANTOM = dict(n=600, malignant_fraction=0.4, size=64, difficulty="medium")


def _step(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def run_demo(out: str | Path = "oncosynth-demo", seed: int = 0) -> Path:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    t = _step("1. phantom data set")
    phantom_dir = write_phantom(out / "phantom", PhantomConfig(seed=seed, **DEMO_PHANTOM))
    console.print(f"phantom written to {phantom_dir} ({time.perf_counter() - t:.1f} s)")

    t = _step("2. data summary")
    dataset = load_dataset(phantom_dir)
    summary = summarise(dataset, progress=False)
    write_json(out / "phantom-summary.json", summary)
    render_summary(summary)
    console.print(f"summary written to {out / 'phantom-summary.json'} ({time.perf_counter() - t:.1f} s)")

    console.rule()
    console.print(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s; "
                  f"every output is under {out}")
    return out
