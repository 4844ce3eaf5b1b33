"""Write sampled images to a folder: atomic PNGs plus a manifest with one row per image."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from oncosynth.errors import ConfigError
from oncosynth.io import save_image, write_json, write_text
from oncosynth.runtime.manifest import make_manifest, package_versions

MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
COLUMNS = ["file", "class", "seed", "generator", "run", "step"]


def image_name(method: str, seed: int, class_name: str) -> str:
    # The class is the last '_' token, so `load_dataset(out, label_from_name=True)` reads the folder back.
    return f"{method}-{seed:07d}_{class_name}.png"


def write_samples(run_folder: str | Path, out: str | Path, n: int, class_names: list[str], seed: int = 0,
                  device: str = "cpu", batch_size: int = 64, reject_memorised: Any = None,
                  **sample_options: Any) -> list[dict[str, Any]]:
    """Sample ``n`` images of each class from the run into ``out``; return the new manifest rows.

    Image ``i`` of a class uses latent seed ``seed + i`` (so it can be regenerated alone). Existing files
    are never overwritten: a name clash is an error before anything is written. The manifest is
    rewritten (atomically) after every batch, so a killed run leaves a manifest matching its PNGs.
    ``sample_options`` go to the generator's ``sample`` (e.g. SinGAN's ``start_scale``, DDPM's
    ``guidance`` and ``steps``). ``reject_memorised`` (a training data folder or Dataset) screens every
    image with the memorisation check and replaces flagged ones by draws from seeds ``seed + n`` on
    (see ``generators.guard``); the manifest lists what was dropped.
    """
    from oncosynth.generators.registry import load_generator
    from oncosynth.runtime.devices import resolve_device

    if n < 1:
        raise ConfigError(f"--n must be >= 1, not {n}")
    if not class_names:
        raise ConfigError("name at least one --class to generate")
    gen = load_generator(run_folder, device=resolve_device(device))
    if sample_options:
        import inspect

        accepted = inspect.signature(gen.sample).parameters
        unknown = [k for k in sample_options if k not in accepted]
        if unknown:
            raise ConfigError(f"{gen.name} does not take sampling option(s) {unknown}")
    for name in class_names:
        gen.class_index(name)  # unknown class -> ConfigError before any work
    gen.sample(0, class_names[0], **sample_options)  # bad sampling settings -> ConfigError before any work
    out = Path(out)
    clashes = [image_name(gen.name, seed + i, c) for c in class_names for i in range(n)
               if (out / image_name(gen.name, seed + i, c)).exists()]
    if clashes:
        raise ConfigError(f"{out} already holds {len(clashes)} of these images (e.g. {clashes[0]}); "
                          f"use another --out or --seed (nothing was overwritten)")

    guard = None
    if reject_memorised is not None:
        from oncosynth.generators.guard import MemorisationGuard

        guard = MemorisationGuard(reject_memorised)
    rows, guards = _read_rows(out), _read_guard_records(out)
    new: list[dict[str, Any]] = []
    run_name = str(Path(run_folder))
    for class_name in class_names:
        spare = _spare_seeds(seed + n, out, gen.name, class_name)
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            images = gen.sample(count, class_name, seed=seed + start, batch_size=batch_size, **sample_options)
            seeds = list(range(seed + start, seed + start + count))
            if guard is not None:
                images, seeds = guard.screen(images, seeds, class_name, spare_seeds=spare, redraw=lambda s, c=class_name:
                                             gen.sample(1, c, seed=s, batch_size=1, **sample_options))
            for image, image_seed in zip(images, seeds):
                file = image_name(gen.name, image_seed, class_name)
                save_image(image, out / file)
                new.append({"file": file, "class": class_name, "seed": image_seed, "generator": gen.name,
                            "run": run_name, "step": gen.step})
            _write_manifest(out, rows + new, gen, guards + ([guard.summary()] if guard else []))
    return new


def _spare_seeds(start: int, out: Path, method: str, class_name: str):
    """Replacement seeds for the memorisation guard: ``start, start+1, ...`` without a file in ``out``."""
    seed = start
    while True:
        if not (out / image_name(method, seed, class_name)).exists():
            yield seed
        seed += 1


def _read_rows(out: Path) -> list[dict[str, Any]]:
    path = out / MANIFEST_CSV
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


def _write_manifest(out: Path, rows: list[dict[str, Any]], gen, guards: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / MANIFEST_CSV, buffer.getvalue())
    write_json(out / MANIFEST_JSON, {
        **make_manifest("samples/" + gen.name, gen.checkpoint_config(), seed=None,
                        data_hash=gen.manifest.get("data_hash")),
        "generator_manifest": gen.manifest, "versions": package_versions(), "images": rows,
        **({"memorisation_guard": guards} if guards else {}),
    })
