"""Generators trained inside a study, on exactly the real records of one cell.

A synthetic source ``train: {method, steps, options}`` asks for a generator
per (fraction, seed), fitted on the same real training records as that cell's
classifier, so the synthetic arm sees no patient the `real` arm does not.

Each generator lives in ``OUT/generators/<key>/``, where the key hashes the
records and every setting that changes the result (method, steps, options,
image size, seed): arms and privacy budgets that need the same generator
share one folder, and a changed setting gets a new one. Inside:

* ``training_data.json``: the records it is trained on (written first, so
  even a half-trained folder says what it saw);
* ``run/``: the generator's own run folder (checkpoints; a killed run resumes
  from its newest checkpoint, through the generator's ``fit``);
* ``generator.json``: written last, the completion marker (timings).

Any registered generator works: it is made with ``create_generator`` and
trained with its ``fit(data, run_folder, steps, seed=, device=, progress=)``,
where ``data`` is a Dataset holding exactly the cell's records (the input every
generator accepts). It trains at its own configured size (default: the data's
native size); the study resizes its samples to the classifier's size.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from oncosynth.io import write_json
from oncosynth.runtime import hash_strings
from oncosynth.data.lineage import describe_records, image_name
from oncosynth.study.provenance import TRAINING_DATA_FILE

DONE_FILE = "generator.json"
GENERATORS_DIR = "generators"


def generator_key(records: list[Any], method: str, steps: int | None, options: dict[str, Any], size: int,
                  channels: int, seed: int) -> str:
    """A stable name for one in-study generator: the records it sees plus everything that shapes it."""
    names = sorted(f"{image_name(r.uid)}|{r.label}|{r.patient}" for r in records)
    settings = json.dumps({"method": method, "steps": steps, "options": options, "size": size,
                           "channels": channels, "seed": seed}, sort_keys=True)
    return f"{method}-{hash_strings(names + [settings])}"


def generator_folder(out: str | Path, key: str) -> Path:
    return Path(out) / GENERATORS_DIR / key


def is_trained(folder: Path) -> bool:
    return (folder / DONE_FILE).is_file()


def train_in_study(folder: Path, method: str, steps: int | None, options: dict[str, Any], data: Any,
                   seed: int, device: str = "cpu", fit_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or finish training) one generator in ``folder`` on ``data`` (a Dataset of the cell's
    records); return its completion record. A finished folder is returned as it is."""
    from oncosynth.generators import create_generator

    folder = Path(folder)
    records = list(data.records)
    if is_trained(folder):
        return json.loads((folder / DONE_FILE).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / TRAINING_DATA_FILE).is_file():
        write_json(folder / TRAINING_DATA_FILE, {"training_data": describe_records(records),
                                                 "method": method, "steps": steps, "options": options,
                                                 "seed": seed})
    resumed = (folder / "run" / "checkpoints").is_dir()
    wall, cpu = time.perf_counter(), time.process_time()
    generator = create_generator(method, **options)
    generator.fit(data, folder / "run", steps=steps, seed=seed, device=device, progress=False, **(fit_options or {}))
    done = {"method": method, "steps": steps, "options": options, "seed": seed, "n_records": len(records),
            "n_patients": len({r.patient for r in records}), "resumed": resumed,
            "wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
    write_json(folder / DONE_FILE, done)  # last: marks the generator finished
    return done


def load_in_study(folder: Path, device: str | torch.device = "cpu"):
    """The trained generator of a finished folder."""
    from oncosynth.generators import load_generator

    return load_generator(Path(folder) / "run", device=device)


# ------------------------------------------------------ in a study run ----
def cell_generator_key(config, prepared, arm, fraction: float, seed: int) -> str:
    """The key of the generator that the cell (arm, fraction, seed) uses."""
    spec = arm.synthetic.train
    records = prepared.cell_records(fraction, seed, config.data.train_split)
    return generator_key(records, spec.method, spec.steps, spec.options, config.data.size,
                         config.data.channels, seed)


def plan_generators(config, prepared) -> dict[str, tuple[str, float, int]]:
    """key -> (arm name, fraction, seed) for every in-study generator the study needs (each once)."""
    jobs: dict[str, tuple[str, float, int]] = {}
    for arm in config.arms:
        if arm.synthetic is not None and arm.synthetic.train is not None:
            for fraction in config.fractions:
                for seed in config.seeds:
                    key = cell_generator_key(config, prepared, arm, fraction, seed)
                    jobs.setdefault(key, (arm.name, fraction, seed))
    return jobs


def generator_unit(config, arm_name: str, fraction: float, seed: int, out: str, device: str = "cpu",
                   threads: int | None = None, cache_dir: str | None = None) -> dict[str, Any]:
    """One in-study generator as a unit of work for the executor (it runs before the cells that use it)."""
    import os

    from oncosynth.study.inputs import prepared_for

    if threads is not None:
        torch.set_num_threads(threads)
    if cache_dir is not None:
        os.environ["ONCOSYNTH_CACHE"] = cache_dir
    prepared = prepared_for(config)
    arm = next(a for a in config.arms if a.name == arm_name)
    spec = arm.synthetic.train
    key = cell_generator_key(config, prepared, arm, fraction, seed)
    records = prepared.cell_records(fraction, seed, config.data.train_split)
    done = train_in_study(generator_folder(out, key), spec.method, spec.steps, spec.options,
                          prepared.dataset.subset(records), seed, str(device), spec.fit)
    return {"key": key, **done}
