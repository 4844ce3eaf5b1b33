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
                  device: str = "cpu", batch_size: int = 64, **sample_options: Any) -> list[dict[str, Any]]:
    """Sample ``n`` images of each class from the run into ``out``; return the new manifest rows.

    Image ``i`` of a class uses latent seed ``seed + i`` (so it can be regenerated alone). Existing files
    are never overwritten: a name clash is an error before anything is written. The manifest is
    rewritten (atomically) after every batch, so a killed run leaves a manifest matching its PNGs.
    ``sample_options`` go to the generator's ``sample`` (e.g. SinGAN's ``start_scale``).
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
    out = Path(out)
    clashes = [image_name(gen.name, seed + i, c) for c in class_names for i in range(n)
               if (out / image_name(gen.name, seed + i, c)).exists()]
    if clashes:
        raise ConfigError(f"{out} already holds {len(clashes)} of these images (e.g. {clashes[0]}); "
                          f"use another --out or --seed (nothing was overwritten)")

    rows = _read_rows(out)
    new: list[dict[str, Any]] = []
    run_name = str(Path(run_folder))
    for class_name in class_names:
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            images = gen.sample(count, class_name, seed=seed + start, batch_size=batch_size, **sample_options)
            for i, image in enumerate(images):
                file = image_name(gen.name, seed + start + i, class_name)
                save_image(image, out / file)
                new.append({"file": file, "class": class_name, "seed": seed + start + i, "generator": gen.name,
                            "run": run_name, "step": gen.step})
            _write_manifest(out, rows + new, gen)
    return new


def _read_rows(out: Path) -> list[dict[str, Any]]:
    path = out / MANIFEST_CSV
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_manifest(out: Path, rows: list[dict[str, Any]], gen) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / MANIFEST_CSV, buffer.getvalue())
    write_json(out / MANIFEST_JSON, {
        **make_manifest("samples/" + gen.name, gen.checkpoint_config(), seed=None,
                        data_hash=gen.manifest.get("data_hash")),
        "generator_manifest": gen.manifest, "versions": package_versions(), "images": rows,
    })
