"""A train / val / test layout of the PCam subset for the study, made of symlinks (no image is copied).

``../shared/data/pcam-subset`` has the official ``train`` and ``valid`` splits only, and a study
needs three. The layout keeps ``valid`` as the test split (it is slide-disjoint from ``train``,
as PCam's official splits are) and carves a validation split out of ``train``: ``--val-per-class``
patches per class, chosen by a hash of the file name (stable across machines and runs). PCam
publishes no slide ids, so validation and training patches may share slides; that makes
validation scores optimistic but never touches the test split.

  python bench/make_pcam_layout.py --source ../shared/data/pcam-subset --out bench/out/pcam-study
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def make_layout(source: Path, out: Path, val_per_class: int) -> dict[str, dict[str, int]]:
    """Create ``out/{train,val,test}/{0,1}/`` symlinks; return the counts. An existing layout is rebuilt."""
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}, "test": {}}
    for cls in ("0", "1"):
        train = sorted((source / "train" / cls).iterdir(), key=lambda p: _rank(p.name))
        test = sorted((source / "valid" / cls).iterdir())
        if len(train) <= val_per_class:
            raise SystemExit(f"{source / 'train' / cls}: {len(train)} patches, cannot hold out {val_per_class}")
        for split, files in (("val", train[:val_per_class]), ("train", train[val_per_class:]), ("test", test)):
            folder = out / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
            for file in files:
                os.symlink(file.resolve(), folder / file.name)
            counts[split][cls] = len(files)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/pcam-subset"))
    parser.add_argument("--out", type=Path, default=Path("bench/out/pcam-study"))
    parser.add_argument("--val-per-class", type=int, default=500)
    args = parser.parse_args()
    print(make_layout(args.source, args.out, args.val_per_class))


if __name__ == "__main__":
    main()
