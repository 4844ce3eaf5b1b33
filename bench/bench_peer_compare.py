"""Score our generator's images and the peer's MCGAN images against the same real test split.

    PYTHONPATH=src python bench/bench_peer_compare.py --run bench/out/cdcgan-w16-cbis128-v2 \
        --encoder bench/out/metrics/encoder --n 150

Samples ``--n`` images per class from each ``--run`` (into ``<run>-samples-<n>``, reused when
there), draws ``2n`` of the peer's images at random (all 3,000 when n = 1500), and evaluates every
set with ``oncosynth.metrics.evaluate`` against the CBIS-DDSM test split (FRD on at most
``--frd-images`` images per set, FID/KID/PRDC in the encoder's feature space, memorisation against
the training split). Prints one JSON line per set and writes ``--out``.
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
    ap.add_argument("--run", type=Path, action="append", default=[], help="generator run folder (repeatable)")
    ap.add_argument("--encoder", type=Path, required=True, help="classifier/encoder checkpoint for FID")
    ap.add_argument("--n", type=int, default=150, help="images per class")
    ap.add_argument("--real", type=Path, default=SHARED / "cbis-ddsm-masses")
    ap.add_argument("--peer", type=Path, default=SHARED / "mcgan-synthetic-cbis-ddsm")
    ap.add_argument("--frd-images", type=int, default=None, help="FRD on at most this many images (default 2n)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample-option", action="append", default=[], metavar="KEY=VALUE",
                    help="sampling setting for the runs' images, value as JSON (e.g. guidance=4); repeatable")
    ap.add_argument("--classifier", type=Path, default=None,
                    help="a classifier trained on real images: adds each set's class signal")
    ap.add_argument("--val-reference", action="store_true",
                    help="also score the real validation split as if synthetic: the floor of every metric")
    ap.add_argument("--skip-peer", action="store_true", help="score only the runs (e.g. the peer was scored before)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "peer-compare.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    options = {key: json.loads(value) for key, _, value in (o.partition("=") for o in args.sample_option)}
    suffix = "".join(f"-{key}{value}" for key, value in options.items())
    sets = {}
    for run in args.run:
        samples = run.with_name(f"{run.name}-samples-{args.n}{suffix}")
        # resumes a half-written set and does nothing to a complete one
        generate_images(run, samples, n=args.n, class_names=["benign", "malignant"], seed=1000, **options)
        sets[run.name] = samples
    real = load_dataset(args.real)
    peer = load_dataset(args.peer)
    take = min(2 * args.n, len(peer.records))
    if not args.skip_peer:
        sets["peer"] = peer.subset(random.Random(0).sample(peer.records, take))
    if args.val_reference:
        sets["real-val"] = real.split("val")
    frd_images = args.frd_images or 2 * args.n
    results = {}
    for name, synthetic in sets.items():
        started = time.perf_counter()
        folder = ROOT / "bench" / "out" / f"peer-compare-{name}-{args.n}{suffix}"
        if (folder / "metrics.json").is_file():  # scored by an earlier (killed) run of this command
            metrics = json.loads((folder / "metrics.json").read_text())
        else:
            metrics = evaluate(real.split("test"), synthetic, train=real.split("train"),
                               feature_net=f"encoder:{args.encoder}", label_from_name=True, out=folder,
                               frd_max_images=frd_images, frd_workers=args.threads, classifier=args.classifier,
                               progress=False)
        overall = metrics["results"]["overall"]
        results[name] = {k: overall.get(k) for k in SHOWN} | {"seconds": round(time.perf_counter() - started, 1)}
        if metrics.get("class_signal"):
            results[name]["class_signal_auroc"] = metrics["class_signal"]["synthetic"]["auroc"]
            results[name]["classifier_auroc_on_test"] = metrics["class_signal"]["real"]["auroc"]
        print(name, json.dumps(results[name]), flush=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
