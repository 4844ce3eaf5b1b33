"""Where the batched FRD radiomics spends its time: CPU milliseconds per image for each stage.

One process, one thread, batches of 64 CBIS-DDSM test patches (128 px), CPU
time (``time.process_time``), so the numbers hold on a shared machine better
than wall time does.

    PYTHONPATH=src python bench/profile_frd.py --data ../shared/data --images 256
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import oncosynth.metrics.radiomics.firstorder as firstorder
import oncosynth.metrics.radiomics.glcm as glcm
import oncosynth.metrics.radiomics.glrlm as glrlm
import oncosynth.metrics.radiomics.glszm as glszm
import oncosynth.metrics.radiomics.ngtdm as ngtdm
import oncosynth.metrics.radiomics.preprocess as preprocess
import oncosynth.metrics.radiomics.wavelet as wavelet
from oncosynth.metrics.radiomics.images import read_grey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sorted((args.data / "cbis-ddsm-masses" / "test").glob("*/*.png"))[: args.images]
    images = np.stack([read_grey(f) for f in files]).astype(np.float64)
    spent: dict[str, float] = defaultdict(float)

    def stage(name, fn, *a):
        start = time.process_time()
        out = fn(*a)
        spent[name] += time.process_time() - start
        return out

    for s in range(0, len(images), args.batch):
        x = torch.from_numpy(images[s:s + args.batch])
        resampled = stage("normalise + resample", lambda: preprocess.resample(preprocess.normalize(x)))
        bands = stage("wavelet", wavelet.wavelet_bands, resampled)
        for values in [resampled, *bands.values()]:
            bins, ng = stage("discretise", preprocess.discretize, values)
            g = int(ng.max())
            stage("first order", firstorder.first_order, values, bins, g)
            stage("GLCM", glcm.glcm, bins, ng, g)
            stage("GLRLM", glrlm.glrlm, bins, g)
            stage("GLSZM", glszm.glszm, bins, g)
            stage("NGTDM", ngtdm.ngtdm, bins, g)
    total = sum(spent.values())
    print(f"{len(images)} images, batches of {args.batch}, 1 thread: {1000 * total / len(images):.1f} CPU-ms per image")
    print("| stage | CPU ms per image | share |\n|---|---|---|")
    for name, seconds in spent.items():
        print(f"| {name} | {1000 * seconds / len(images):.1f} | {100 * seconds / total:.0f}% |")


if __name__ == "__main__":
    main()
