"""A sample grid of trained generators beside real training images: one pair of rows per generator
(one row per class, same seeds), then one row per class of real images.

  PYTHONPATH=src .venv/bin/python bench/grid_generators.py --data bench/out/pcam-study \
      --run bench/out/protocol-pcam/generators/stylegan2-ada-2c160fb80684eccc/run \
      --out bench/generators_sg2ada-in-study-pcam64-1500steps.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from oncosynth.data import cached_tensors, load_dataset
from oncosynth.generators import load_generator
from oncosynth.io import save_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="data set whose train split gives the real rows")
    parser.add_argument("--run", type=Path, action="append", required=True, help="generator run folder (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8, help="images per row")
    args = parser.parse_args()
    rows, size, channels = [], None, None
    for run in args.run:
        gen = load_generator(run)
        size, channels = size or gen.size, channels or gen.channels
        rows += [torch.nn.functional.interpolate(gen.sample(args.n, name, seed=1000), size=(size, size),
                                                 mode="bilinear", antialias=True, align_corners=False)
                 for name in gen.classes]
    dataset = load_dataset(args.data)
    real, labels = cached_tensors(dataset.split("train"), size, channels)
    for i, _ in enumerate(dataset.classes):
        rows.append(real[torch.nonzero(labels == i).flatten()[:args.n]].float() / 255)
    save_grid(torch.cat(rows), args.out, nrow=args.n)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
