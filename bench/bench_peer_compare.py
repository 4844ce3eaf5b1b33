"""Score our generator's images and the peer's MCGAN images against the same real test split.

    PYTHONPATH=src python bench/bench_peer_compare.py --run bench/out/cdcgan-w16-cbis128-v2 \
        --encoder bench/out/metrics/encoder --n 150

Samples ``--n`` images per class from the run, draws ``2n`` of the peer's images at random, and
evaluates both with ``oncosynth.metrics.evaluate`` against the CBIS-DDSM test split (FRD on at most
``2n`` images per set, FID/KID/PRDC in the encoder's feature space, memorisation against the
training split). Prints one JSON line per set and writes bench/out/peer-compare.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from oncosynth.data import load_dataset
from oncosynth.generators import generate_images
from oncosynth.metrics.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHOWN = ("frd", "fid", "kid", "precision", "recall", "density", "coverage", "ms_ssim_synthetic",
         "memorised_fraction", "n_synthetic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="generator run folder")
    ap.add_argument("--encoder", type=Path, required=True, help="classifier/encoder checkpoint for FID")
    ap.add_argument("--n", type=int, default=150, help="images per class")
    ap.add_argument("--real", type=Path, default=SHARED / "cbis-ddsm-masses")
    ap.add_argument("--peer", type=Path, default=SHARED / "mcgan-synthetic-cbis-ddsm")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ours = args.run.with_name(args.run.name + "-samples")
    if not (ours / "manifest.csv").is_file():
        generate_images(args.run, ours, n=args.n, class_names=["benign", "malignant"], seed=1000)
    real = load_dataset(args.real)
    peer = load_dataset(args.peer)
    peer_subset = peer.subset(random.Random(0).sample(peer.records, 2 * args.n))
    results = {}
    for name, synthetic in (("ours", ours), ("peer", peer_subset)):
        started = time.perf_counter()
        metrics = evaluate(real.split("test"), synthetic, train=real.split("train"),
                           feature_net=f"encoder:{args.encoder}", label_from_name=True,
                           out=ROOT / "bench" / "out" / f"peer-compare-{name}", frd_max_images=2 * args.n,
                           frd_workers=2, progress=False)
        overall = metrics["results"]["overall"]
        results[name] = {k: overall.get(k) for k in SHOWN} | {"seconds": round(time.perf_counter() - started, 1)}
        print(name, json.dumps(results[name]), flush=True)
    (ROOT / "bench" / "out" / "peer-compare.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
