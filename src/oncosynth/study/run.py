"""Running a study: check every input, train each cell, aggregate, write the report.

Each unfinished cell is one unit of work (:func:`~oncosynth.study.cells.cell_unit`) handed to
an executor (``oncosynth.parallel.executor``): in this process by default, or a local process pool, or
Ray tasks on a cluster. The output folder is the only thing cells share, so a study can be
resumed under another executor. In-study generators (``synthetic.train``) are units too, run
before the cells (:func:`~oncosynth.study.in_study.generator_unit`); the cells load them from
``out/generators/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from oncosynth.parallel.distributed import SINGLE, init_distributed, shutdown
from oncosynth.errors import ConfigError, WorkFailed
from oncosynth.parallel.executor import Executor, LocalExecutor, Outcome, Unit, create_executor
from oncosynth.io import check_output_folder, write_json
from oncosynth.runtime.devices import resolve_device
from oncosynth.runtime.manifest import make_manifest
from oncosynth.study.aggregate import aggregate, write_csv
from oncosynth.study.cells import MARKER, Cell, cell_fingerprint, cell_resources, cell_unit, plan_cells, read_marker
from oncosynth.study.config import StudyConfig, load_config
from oncosynth.study.in_study import generator_folder, generator_unit, is_trained, plan_generators
from oncosynth.study.inputs import keep_prepared, prepare
from oncosynth.study.page import write_report


def run_study(config: StudyConfig | str | Path, out: str | Path = "study-out", device: str = "auto",
              progress: bool = True, executor: Executor | str | None = None,
              executor_options: dict[str, Any] | None = None, threads_per_cell: int = 1,
              distributed: bool = False, gpus_per_cell: float = 1.0, allow_leakage: bool = False) -> Path:
    """Run (or resume) every cell, then write results.json, results.csv and report.html; return the report path.

    ``executor`` decides where cells run: ``None``/``"local"`` (in this process unless
    ``executor_options={"workers": N}``), ``"ray"`` (``executor_options`` ``address``,
    ``num_cpus``, ``retries``) or an :class:`~oncosynth.parallel.executor.Executor` instance. Finished
    cells are kept whatever happens to others; failed cells are listed in a
    :class:`~oncosynth.errors.WorkFailed` raised after every other cell finished.

    ``distributed=True`` (under torchrun): each cell in turn is trained data-parallel by all
    ranks (DDP); rank 0 writes the cells and the results.
    ``allow_leakage``: run although a patient is in two splits (otherwise a DataError naming them);
    results.json and the report then list those patients.
    """
    if not isinstance(config, StudyConfig):
        config = load_config(config)
    if allow_leakage:  # the CLI's --allow-leakage, same as data.allow_leakage: true in the config
        config = config.model_copy(update={"data": config.data.model_copy(update={"allow_leakage": True})})
    out = check_output_folder(Path(out).resolve())
    context = SINGLE
    if distributed:
        if executor not in (None, "local") or (executor_options or {}).get("workers"):
            raise ConfigError("--distributed trains one cell at a time on all torchrun processes; "
                              "it cannot be combined with --executor ray or --workers")
        if any(cell.epsilon is not None for cell in plan_cells(config)):
            raise ConfigError("--distributed does not run DP-SGD cells (opacus); drop the DP arms or run "
                              "them without --distributed")
        context, device = init_distributed(device, config.train.batch_size)
        progress = progress and context.is_main
    elif device.startswith("cuda") and _remote(executor):
        device = torch.device(device)  # the GPUs are on the cluster's nodes, not necessarily here
    else:
        device = resolve_device(device)
    cells = plan_cells(config)
    records: dict[str, dict] = {}
    todo = []
    for cell in cells:
        marker = out / "cells" / cell.id / MARKER
        record = read_marker(marker)
        if record is not None:
            if record.get("fingerprint", cell_fingerprint(config, cell)) != cell_fingerprint(config, cell):
                raise ConfigError(f"{marker.parent} was computed with other settings than this config; "
                                  "use another --out folder or delete that cell")
            records[cell.id] = record
        else:
            todo.append(cell)

    own_executor = not isinstance(executor, Executor)
    if own_executor:  # an unreachable cluster fails here, before the data are loaded
        executor = create_executor(executor or "local", **(executor_options or {}))
    try:
        inline = isinstance(executor, LocalExecutor) and executor.workers == 0
        if not 0 < gpus_per_cell <= 1 and not (gpus_per_cell > 1 and float(gpus_per_cell).is_integer()):
            raise ConfigError(f"gpus per cell must be a fraction in (0, 1] or a whole number, not {gpus_per_cell}")
        units = _cell_units(config, todo, out, device, executor, inline, threads_per_cell, gpus_per_cell)
        if context.active:
            for unit in units:
                unit.kwargs["context"] = context
        executor.check(units)  # e.g. GPUs the cluster lacks: fail before any work
        prepared = prepare(config, progress=progress)  # all input errors surface here, before training
        if context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", config.model_dump(mode="json"))
        if inline:
            keep_prepared(config, prepared)  # the cells reuse what was just loaded
        if context.is_main:  # in-study generators first: the cells that use them load them from out/
            _train_generators(config, prepared, out, device, executor, inline, threads_per_cell, progress)
        failures = _run_cells(config, units, cells, records, executor, progress)
    finally:
        if own_executor:
            executor.close()
    if failures:
        finished = sum(1 for c in cells if c.id in records)
        listed = "; ".join(f"{o.key}: {o.error} (after {o.attempts} attempt(s))" for o in failures)
        raise WorkFailed(f"{len(failures)} of {len(cells)} study cells failed ({listed}). The {finished} finished "
                         f"cells are kept in {out / 'cells'}; run the same command again to retry only the others")

    if not context.is_main:
        shutdown(context)
        return out / "report.html"
    ordered = [records[c.id] for c in cells]
    rows = aggregate(config, ordered, out, prepared.classes, prepared.positive)
    manifest = make_manifest("study", config.model_dump(mode="json"), None, prepared.data_hash,
                             device=str(device), cells=len(cells))
    write_json(out / "results.json", {"manifest": manifest, "classes": prepared.classes,
                                      "positive_class": prepared.classes[prepared.positive],
                                      "leakage": prepared.leakage,  # patients in two splits (allowed)
                                      "summary": rows, "cells": ordered})
    write_csv(out / "results.csv", rows)
    report = write_report(out / "report.html", config, prepared, ordered, rows, out)
    shutdown(context)
    return report



def _remote(executor: Executor | str | None) -> bool:
    """Cells run on other machines (so CUDA need not be available where the study is started)."""
    if isinstance(executor, Executor):
        return not isinstance(executor, LocalExecutor)
    return executor not in (None, "local")



def _cell_units(config: StudyConfig, todo: list[Cell], out: Path, device: torch.device, executor: Executor,
                inline: bool, threads: int, gpus: float = 1.0) -> list[Unit]:
    # in this process the unit keeps the torch.device; one that crosses a process carries a string, and
    # a remote worker sees only the GPU(s) Ray gave it, as cuda:0
    unit_device: torch.device | str = device
    if not inline:
        unit_device = "cuda" if device.type == "cuda" and not isinstance(executor, LocalExecutor) else str(device)
    units = []
    for cell in todo:
        kwargs: dict[str, Any] = {}
        if not inline:
            kwargs["threads"] = threads
            kwargs["cache_dir"] = os.environ.get("ONCOSYNTH_CACHE")
        units.append(Unit(cell.id, cell_unit, (config, cell, str(out), unit_device), kwargs,
                          cell_resources(device, threads, gpus)))
    return units



def _train_generators(config: StudyConfig, prepared, out: Path, device: torch.device, executor: Executor,
                      inline: bool, threads: int, progress: bool) -> None:
    """Train every in-study generator that is not finished yet, each as one unit of the executor."""
    jobs = plan_generators(config, prepared)
    todo = {key: job for key, job in jobs.items() if not is_trained(generator_folder(out, key))}
    if not todo:
        return
    # a remote worker sees only the GPU(s) Ray gave it, as cuda:0
    unit_device = "cuda" if device.type == "cuda" and not isinstance(executor, LocalExecutor) else str(device)
    units = []
    for key, (arm, fraction, seed) in todo.items():
        kwargs: dict[str, Any] = {} if inline else {"threads": threads,
                                                    "cache_dir": os.environ.get("ONCOSYNTH_CACHE")}
        units.append(Unit(f"generator:{key}", generator_unit, (config, arm, fraction, seed, str(out),
                                                                unit_device), kwargs,
                          cell_resources(device, threads)))
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(units), desc="in-study generators", unit="generator",
               disable=not progress)
    failures = []
    for outcome in executor.run(units):
        bar.update(1)
        if not outcome.ok:
            failures.append(f"{outcome.key}: {outcome.error}")
    bar.close()
    if failures:
        raise WorkFailed(f"{len(failures)} of {len(jobs)} in-study generators failed ({'; '.join(failures)}); "
                         f"the finished ones are kept in {out / 'generators'}; run the same command again")


def _run_cells(config: StudyConfig, units: list[Unit], cells: list[Cell], records: dict[str, dict],
               executor: Executor, progress: bool) -> list[Outcome]:
    """Hand the unfinished cells to the executor; fill ``records`` as they finish; return the failures."""
    bar = tqdm(total=len(cells), initial=len(cells) - len(units), desc=f"study {config.name}", unit="cell",
               disable=not progress)
    if isinstance(executor, LocalExecutor) and executor.workers == 0:  # in this process: epoch progress too
        for unit in units:
            def on_epoch(info: dict, key=unit.key) -> None:
                bar.set_postfix_str(f"{key} epoch {info['epoch']}/{info['epochs']} "
                                    f"val {info.get('val_' + config.train.select_on, float('nan')):.3f}")
            unit.kwargs["on_epoch"] = on_epoch
        if units:
            bar.set_postfix_str(f"{units[0].key} starting")
    failures = []
    started, trained = time.perf_counter(), 0
    for outcome in executor.run(units):
        bar.update(1)
        if not outcome.ok:
            failures.append(outcome)
            bar.set_postfix_str(f"{outcome.key} FAILED")
            continue
        records[outcome.key] = outcome.value
        trained += 1
        left = len(units) - trained - len(failures)
        per_cell = (time.perf_counter() - started) / trained
        bar.set_postfix_str(f"{outcome.key} done; ~{per_cell * left / 60:.1f} min left")
    bar.close()
    return failures

