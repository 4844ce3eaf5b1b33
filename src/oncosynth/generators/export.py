"""Write sampled images to a folder: atomic PNGs plus a manifest with one row per image."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from oncosynth.errors import ConfigError
from oncosynth.io import check_output_folder, save_image, write_json, write_text
from oncosynth.runtime.manifest import make_manifest, package_versions
from oncosynth.runtime.run_threads import RunThreads

MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
PENDING_CSV = ".pending.csv"
COLUMNS = ["file", "class", "seed", "generator", "run", "step"]


def image_name(method: str, seed: int, class_name: str) -> str:
    # The class is the last '_' token, so `load_dataset(out, label_from_name=True)` reads the folder back.
    return f"{method}-{seed:07d}_{class_name}.png"


def write_samples(run_folder: str | Path, out: str | Path, n: int, class_names: list[str], seed: int = 0,
                  device: str = "cpu", batch_size: int = 64, reject_memorised: Any = None,
                  **sample_options: Any) -> list[dict[str, Any]]:
    """Sample ``n`` images of each class from the run into ``out``; return the new manifest rows.

    Image ``i`` of a class uses latent seed ``seed + i`` (so it can be regenerated alone). Existing
    files made by anything else are never overwritten: a name clash is an error before anything is
    written. Every PNG on disk is listed at every instant, in the manifest or in the journal of the
    batch being written (``.pending.csv``, written before the batch's images); a re-run folds the
    journal into the manifest, so re-running a killed command completes the set.
    ``sample_options`` go to the generator's ``sample`` (e.g. SinGAN's ``start_scale``, DDPM's
    ``guidance`` and ``steps``). ``reject_memorised`` (a training data folder or Dataset) screens every
    image with the memorisation check and replaces flagged ones by draws from seeds ``seed + n`` on
    (see ``generators.guard``); ``manifest.json`` lists what was dropped under ``memorisation_guard``.
    """
    from oncosynth.generators.registry import load_generator
    from oncosynth.runtime.devices import resolve_device

    if n < 1:
        raise ConfigError(f"--n must be >= 1, not {n}")
    if not class_names:
        raise ConfigError("name at least one --class to generate")
    out = Path(out)
    check_output_folder(out, "--out")
    gen = load_generator(run_folder, device=resolve_device(device))
    gen.check_sample_options(**sample_options)
    for name in class_names:
        gen.class_index(name)  # unknown class -> ConfigError before any work
    gen.sample(0, class_names[0], **sample_options)  # bad sampling settings -> ConfigError before any work
    run_name = str(Path(run_folder))
    rows = _recover(out, gen)
    listed = {r["file"]: r for r in rows}

    def row(class_name: str, s: int) -> dict[str, Any]:
        return {"file": image_name(gen.name, s, class_name), "class": class_name, "seed": s,
                "generator": gen.name, "run": run_name, "step": gen.step}

    todo: dict[str, list[int]] = {c: [] for c in class_names}
    clashes = []
    for class_name in class_names:
        for s in range(seed, seed + n):
            wanted = row(class_name, s)
            have = listed.get(wanted["file"])
            on_disk = (out / wanted["file"]).exists()
            if have is not None and _same(have, wanted):
                if not on_disk:
                    todo[class_name].append(s)  # listed, then deleted: make it again
            elif have is not None or on_disk:
                clashes.append(wanted["file"])
            else:
                todo[class_name].append(s)
    if clashes:
        raise ConfigError(f"{out} already holds {len(clashes)} of these images from another run, step or "
                          f"source (e.g. {clashes[0]}); use another --out or --seed (nothing was overwritten)")

    guard, guards = None, _read_guard_records(out)
    if reject_memorised is not None:
        from oncosynth.generators.guard import MemorisationGuard

        guard = MemorisationGuard(reject_memorised)
    new: list[dict[str, Any]] = []
    with RunThreads(out):  # a completed set matches one written in one go, whatever the load now
        for class_name, seeds in todo.items():
            spare = _spare_seeds(seed + n, out, gen.name, class_name)
            for first, count in _runs(seeds, batch_size):
                images = gen.sample(count, class_name, seed=first, batch_size=batch_size, **sample_options)
                kept = list(range(first, first + count))
                if guard is not None:
                    images, kept = guard.screen(images, kept, class_name, spare_seeds=spare,
                                                redraw=lambda s, c=class_name: gen.sample(1, c, seed=s, batch_size=1,
                                                                                          **sample_options))
                batch = [row(class_name, s) for s in kept]
                _write_rows(out / PENDING_CSV, batch)  # the journal first: no PNG is ever unlisted
                for image, entry in zip(images, batch):
                    save_image(image, out / entry["file"])
                rows = [r for r in rows if r["file"] not in {e["file"] for e in batch}] + batch
                new += batch
                _write_manifest(out, rows, gen, guards + ([guard.summary()] if guard is not None else []))
                (out / PENDING_CSV).unlink()
    return new


def _spare_seeds(start: int, out: Path, method: str, class_name: str):
    """Replacement seeds for the memorisation guard: ``start, start+1, ...`` without a file in ``out``."""
    seed = start
    while True:
        if not (out / image_name(method, seed, class_name)).exists():
            yield seed
        seed += 1


def _same(have: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(str(have.get(k)) == str(wanted[k]) for k in COLUMNS)


def _runs(seeds: list[int], batch_size: int):
    """Contiguous seed ranges of at most ``batch_size``: (first seed, count)."""
    start = 0
    while start < len(seeds):
        end = start + 1
        while end < len(seeds) and end - start < batch_size and seeds[end] == seeds[end - 1] + 1:
            end += 1
        yield seeds[start], end - start
        start = end


def _recover(out: Path, gen) -> list[dict[str, Any]]:
    """The manifest's rows, plus the rows of a batch a killed run had started (those whose PNG was written)."""
    rows = _read_rows(out / MANIFEST_CSV)
    pending = out / PENDING_CSV
    if pending.is_file():
        listed = {r["file"] for r in rows}
        finished = [r for r in _read_rows(pending) if (out / r["file"]).is_file() and r["file"] not in listed]
        if finished:
            rows += finished
            _write_manifest(out, rows, gen)
        pending.unlink()
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _read_guard_records(out: Path) -> list[dict[str, Any]]:
    """Memorisation-guard records of earlier runs into ``out`` (kept when a run adds images)."""
    import json

    path = out / MANIFEST_JSON
    try:
        return list(json.loads(path.read_text()).get("memorisation_guard", [])) if path.is_file() else []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ConfigError(f"{path}: corrupt manifest ({exc}); use another --out (nothing was overwritten)") from None


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _write_manifest(out: Path, rows: list[dict[str, Any]], gen, guards: list[dict[str, Any]] | None = None) -> None:
    """``guards``: the memorisation-guard records to list (None: keep those already in the manifest)."""
    guards = _read_guard_records(out) if guards is None else guards
    _write_rows(out / MANIFEST_CSV, rows)
    write_json(out / MANIFEST_JSON, {
        **make_manifest("samples/" + gen.name, gen.checkpoint_config(), seed=None,
                        data_hash=gen.manifest.get("data_hash")),
        "generator_manifest": gen.manifest, "versions": package_versions(), "images": rows,
        **({"memorisation_guard": guards} if guards else {}),
    })
