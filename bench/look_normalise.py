"""A grid to look at: random patches of two data sets, raw, percentile-normalised and equalised.

Rows: set A raw / percentile / equalise, then set B the same. Used for issue 18's fourth recipe
round (CBIS-DDSM training patches against BCDR-dev), to see what each per-image normalisation
leaves of the difference between two hospitals' scanners.

  PYTHONPATH=src .venv/bin/python bench/look_normalise.py ../shared/data/cbis-ddsm-masses/train \
      ../shared/data/bcdr-external-dev --out bench/recipe_norm_cbis_bcdr.png
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oncosynth.classifiers.normalise import equalise, percentile_scale


def random_patches(folder: Path, n: int, size: int, rng: random.Random) -> torch.Tensor:
    files = sorted(folder.rglob("*.png"))
    if len(files) < n:
        raise SystemExit(f"{folder}: {len(files)} PNG files, the grid needs {n}")
    chosen = rng.sample(files, n)
    grey = [np.asarray(Image.open(f).convert("L").resize((size, size), Image.BILINEAR)) for f in chosen]
    return torch.tensor(np.stack(grey), dtype=torch.float32)[:, None] / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--zoom", type=int, default=96, help="pixels per patch in the saved grid")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for folder in (args.first, args.second):
        raw = random_patches(folder, args.n, args.size, rng)
        stretched, equalised = percentile_scale(raw), equalise(raw)
        rows += [raw, stretched, equalised]
        print(f"{folder}: mean grey raw {raw.mean():.3f}, percentile {stretched.mean():.3f}, "
              f"equalise {equalised.mean():.3f}")
    grid = torch.cat([torch.cat(list(row[:, 0]), dim=1) for row in rows], dim=0)
    image = Image.fromarray((grid.clamp(0, 1).numpy() * 255).astype(np.uint8))
    image.resize((args.n * args.zoom, len(rows) * args.zoom), Image.NEAREST).save(args.out, optimize=True)


if __name__ == "__main__":
    main()
