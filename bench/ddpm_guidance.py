"""Choose a diffusion model's guidance scale (and between runs) on the validation side only.

    PYTHONPATH=src python bench/ddpm_guidance.py --run A=bench/out/ddpm-a --run B=bench/out/ddpm-b \
        --guidance 1 2 4 6 --n 150 --classifier CELL0/model --classifier CELL1/model \
        --encoder CELL0/model --json bench/results/ddpm-guidance.json

For every run and guidance scale, samples ``--n`` images per class (latent seeds ``--seed`` on, the
same noises for every scale and class, so the rows are paired) into ``<run>-g<scale>-n<n>`` (reused
when there), then measures:
- the class signal (``oncosynth.metrics.class_signal``) under each ``--classifier``: classifiers
  trained on real images and selected on validation, whose AUROC on the synthetic images against
  the class asked for says how much class difference the samples carry;
- fidelity against the real **validation** split in the ``--encoder``'s feature space (FID,
  precision / recall / density / coverage, MS-SSIM diversity; no FRD, no memorisation).
No test image is read, so the choice can be made on these numbers and the test split touched once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from oncosynth.data import cached_tensors, load_dataset
from oncosynth.generators import generate_images
from oncosynth.metrics.class_signal import class_signal
from oncosynth.metrics.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIDELITY = ("fid", "precision", "recall", "density", "coverage", "ms_ssim_synthetic")


def sample_set(run: Path, guidance: float, n: int, seed: int) -> Path:
    folder = run.with_name(f"{run.name}-g{guidance:g}-n{n}")
    # resumes a half-written set and does nothing to a complete one
    generate_images(run, folder, n=n, class_names=["benign", "malignant"], seed=seed, guidance=guidance)
    return folder


def score(folder: Path, classifiers: list[Path], encoder: Path, val) -> dict:
    images = load_dataset(folder, label_from_name=True)
    pixels, label_ids = cached_tensors(images, 64, 1, progress=False)
    labels = [images.classes[int(i)] for i in label_ids]
    signals = [class_signal(c, pixels.float() / 255, labels) for c in classifiers]
    metrics = evaluate(val, folder, feature_net=f"encoder:{encoder}", label_from_name=True, compute_frd=False,
                       progress=False)
    overall = metrics["results"]["overall"]
    return {
        "class_signal_auroc": [s["auroc"] for s in signals],
        "class_signal_mean": float(np.mean([s["auroc"] for s in signals])),
        "mean_p_malignant": {c: float(np.mean([s["mean_positive_probability"][c] for s in signals]))
                             for c in ("benign", "malignant")},
        **{k: overall.get(k) for k in FIDELITY},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_FOLDER (repeatable)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0, 6.0])
    ap.add_argument("--n", type=int, default=150, help="images per class and scale")
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--classifier", type=Path, action="append", required=True, help="real-only classifier folder")
    ap.add_argument("--encoder", type=Path, required=True, help="feature net checkpoint for FID/PRDC")
    ap.add_argument("--real", type=Path, default=SHARED / "cbis-ddsm-masses")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    val = load_dataset(args.real).split("val")
    val_pixels, val_ids = cached_tensors(val, 64, 1, progress=False)
    val_labels = [val.classes[int(i)] for i in val_ids]
    scale = [class_signal(c, val_pixels.float() / 255, val_labels, what="validation")["auroc"]
             for c in args.classifier]
    print(f"real validation AUROC of the classifiers (selected on it, so optimistic): {np.round(scale, 3).tolist()}")
    rows = json.loads(args.json.read_text())["rows"] if args.json.is_file() else []
    done = {(r["run"], r["guidance"]) for r in rows}
    for item in args.run:
        name, _, folder = item.partition("=")
        for g in args.guidance:
            if (name, g) in done:
                continue
            samples = sample_set(Path(folder), g, args.n, args.seed)
            rows.append({"run": name, "folder": str(folder), "guidance": g, "n_per_class": args.n,
                         **score(samples, args.classifier, args.encoder, val)})
            r = rows[-1]
            print(f"{name} g{g:g}: class signal {r['class_signal_mean']:.3f} {np.round(r['class_signal_auroc'], 3).tolist()}"
                  f"  coverage {r['coverage']:.3f} recall {r['recall']:.3f} FID {r['fid']:.1f}"
                  f" MS-SSIM {r['ms_ssim_synthetic']:.3f}", flush=True)
            args.json.write_text(json.dumps({"classifiers": [str(c) for c in args.classifier],
                                             "encoder": str(args.encoder), "real_val_auroc": scale,
                                             "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
