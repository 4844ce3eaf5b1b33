"""The image sets of the batched-FRD parity bench, and the PyRadiomics reference cache.

The reference features (PyRadiomics 3.0.1 through ``frd-score`` 1.0.1's own
per-image v1 extraction) are slow, so they are extracted once and cached per
image content in a scratch folder outside the repository
(``--scratch``, default /work/scratch-frd):

    scratch/pyradiomics/<sha1 of the file bytes>.npy   one feature vector (float64)
    scratch/pyradiomics/names.json                      the feature names, in order
    scratch/pcam-grey-300/*.png                         PCam patches as 8-bit grey PNGs

    PYTHONPATH=src python bench/frd_sets.py --data ../shared/data --sets cbis-test pcam-300 mcgan-1000 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import random
import time
from pathlib import Path

import numpy as np

DEFAULT_SCRATCH = Path("/work/scratch-frd")


def image_set(name: str, data: Path, scratch: Path = DEFAULT_SCRATCH) -> list[Path]:
    """Files of one named set (sorted, or a fixed seeded sample)."""
    if name == "cbis-test":  # all 402 test patches (the FRD reference set)
        return sorted((data / "cbis-ddsm-masses" / "test").glob("*/*.png"))
    if name.startswith("mcgan-"):  # seeded sample of the peer's 3,000 synthetic patches
        n = int(name.split("-")[1])
        files = sorted((data / "mcgan-synthetic-cbis-ddsm").glob("*.png"))
        return sorted(random.Random(0).sample(files, n)) if n < len(files) else files
    if name == "pcam-300":  # 300 validation patches, RGB -> 8-bit grey (PIL's ITU-R 601 luma)
        return _pcam_grey(data, scratch / "pcam-grey-300", 300)
    raise SystemExit(f"unknown set '{name}' (cbis-test, mcgan-N, pcam-300)")


def _pcam_grey(data: Path, folder: Path, n: int) -> list[Path]:
    from PIL import Image

    files = sorted((data / "pcam-subset" / "valid").glob("*/*.jpg"))
    picked = sorted(random.Random(0).sample(files, n))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in picked:
        target = folder / f"{f.parent.name}_{f.stem}.png"
        if not target.is_file():
            Image.open(f).convert("L").save(target)
        out.append(target)
    return out


def content_key(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _extract(path: str) -> tuple[str, list[float], dict]:
    from oncosynth.metrics import frd as frd_lib

    if frd_lib._EXTRACTOR is None:
        frd_lib._init_worker()
    frd_module = frd_lib._frd()
    _, features, _ = frd_module.process_image_mask_pair((path, None), feature_extractor=frd_lib._EXTRACTOR,
                                                        frd_version=frd_module.FRD_VERSION_V1)
    return path, list(features.values()), list(features)


def reference_features(files: list[Path], scratch: Path = DEFAULT_SCRATCH, workers: int = 1) -> tuple[np.ndarray, list[str]]:
    """PyRadiomics v1 features (N×F) for files, from the scratch cache or extracted now."""
    folder = scratch / "pyradiomics"
    folder.mkdir(parents=True, exist_ok=True)
    keys = [content_key(f) for f in files]
    todo = sorted({k: str(f) for k, f in zip(keys, files) if not (folder / f"{k}.npy").is_file()}.items())
    if todo:
        path_key = {p: k for k, p in todo}
        start = time.time()
        context = mp.get_context("fork")
        with context.Pool(workers) as pool:
            for i, (path, values, names) in enumerate(pool.imap_unordered(_extract, [p for _, p in todo], chunksize=4)):
                np.save(folder / f"{path_key[path]}.npy", np.asarray(values, dtype=np.float64))
                if not (folder / "names.json").is_file():
                    (folder / "names.json").write_text(json.dumps(names))
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1}/{len(todo)} in {time.time() - start:.0f}s", flush=True)
        print(f"extracted {len(todo)} images with {workers} process(es) in {time.time() - start:.1f}s", flush=True)
    names = json.loads((folder / "names.json").read_text())
    return np.stack([np.load(folder / f"{k}.npy") for k in keys]), names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--sets", nargs="+", default=["cbis-test", "pcam-300", "mcgan-1000"])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for name in args.sets:
        files = image_set(name, args.data, args.scratch)
        feats, names = reference_features(files, args.scratch, args.workers)
        print(f"{name}: {feats.shape[0]} images x {feats.shape[1]} features", flush=True)


if __name__ == "__main__":
    main()
