"""Train a study's in-study generators ahead of its cells, into the folders the study will reuse.

A study trains each in-study generator as a unit before the cells that need it; this script runs
just those units (the same ``generator_unit`` the study runs), for instance while the classifier's
step budget is still being chosen on validation: a generator's folder key depends on its records
and settings, not on the classifier's budget, so the study later finds them finished.

``--set KEY=VALUE`` fills placeholders in the YAML (e.g. ``STEPS=300``) before it is parsed.

  OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/study_generators.py bench/study_protocol_cbis.yaml \
      --set STEPS=300 EVAL=30 GSTEPS=3000 --out bench/out/protocol-cbis
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from oncosynth.study.config import parse_config
from oncosynth.study.in_study import generator_unit, plan_generators
from oncosynth.study.inputs import prepared_for


def filled_config(path: Path, values: dict[str, str]):
    text = path.read_text()
    for key in sorted(values, key=len, reverse=True):  # GSTEPS before STEPS
        text = text.replace(key, values[key])
    return parse_config(yaml.safe_load(text), base=path.parent, source=str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config = filled_config(args.config, dict(item.split("=", 1) for item in args.set))
    jobs = plan_generators(config, prepared_for(config))
    for n, (key, (arm, fraction, seed)) in enumerate(sorted(jobs.items(), key=lambda kv: kv[1][1:]), 1):
        started = time.perf_counter()
        done = generator_unit(config, arm, fraction, seed, str(args.out.resolve()), device=args.device)
        print(f"[{n}/{len(jobs)}] {key} ({arm}, fraction {fraction}, seed {seed}): "
              f"{done['cpu_seconds'] / 60:.1f} CPU-min, {(time.perf_counter() - started) / 60:.1f} min wall", flush=True)


if __name__ == "__main__":
    main()
