"""Does ADA's p follow discriminator overfitting? p's course and D's signal on seen and unseen reals.

For each StyleGAN2-ADA run folder: p and r_t from ``log.jsonl`` over training, then, with the
final discriminator, the overfitting heuristic r = E[sign(D(x))] and the mean logit on N
training images the run saw and on N held-out images of the same kind (at p = 0 and at the
run's final p). A discriminator that memorised its training set scores seen reals higher than
unseen ones; the ADA controller raises p when r_t, measured on augmented training reals,
exceeds its target (0.6).

    PYTHONPATH=src python bench/bench_ada.py \\
        --run bench/out/sg2ada-pcam64-60cpu=../shared/data/pcam-subset \\
        --run bench/out/sg2ada-pcam64-100img=/tmp/pcam-small \\
        --heldout ../shared/data/pcam-subset:val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from oncosynth.data import cached_tensors, load_dataset
from oncosynth.errors import ConfigError
from oncosynth.generators import load_generator


def reals_of(path: str, split: str | None, gen, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """n random images of a data set's split, as the generator trains on them; and the split's size."""
    dataset = load_dataset(path)
    if split is None:
        split = "train" if "train" in dataset.splits else None
    part = dataset.split(split) if split else dataset
    images, labels = cached_tensors(part, gen.size, gen.channels)
    try:
        to_gen = torch.tensor([gen.class_index(c) for c in part.classes])  # the run's class order
    except ConfigError as error:
        raise SystemExit(f"{path}: {error}; give --heldout data of the same kind as the run") from None
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[pick].float() / 127.5 - 1, to_gen[labels[pick].long()], len(images)


@torch.no_grad()
def signal(gen, images: torch.Tensor, labels: torch.Tensor, p: float) -> dict:
    gen.D.eval()
    saved = float(gen.augment.p)
    gen.augment.p.fill_(p)
    torch.manual_seed(0)
    logits = torch.cat([gen.D(gen.augment(images[i:i + 64]), labels[i:i + 64]).flatten()
                        for i in range(0, len(images), 64)])
    gen.augment.p.fill_(saved)
    return {"r": round(float(torch.sign(logits).mean()), 3), "mean_logit": round(float(logits.mean()), 3)}


def course(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return [{"step": r["step"], "p": r.get("augment_p"), "rt": r.get("ada_rt")} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="RUN=DATA",
                    help="a StyleGAN2-ADA run folder and the data set it was trained on")
    ap.add_argument("--heldout", required=True, metavar="DATA[:SPLIT]", help="unseen reals of the same kind")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    held_path, _, held_split = args.heldout.partition(":")
    results = []
    for item in args.run:
        run, _, data = item.partition("=")
        gen = load_generator(run)
        p = float(gen.augment.p)
        *seen, n_train = reals_of(data, None, gen, args.n, seed=1)
        *unseen, _ = reals_of(held_path, held_split or None, gen, args.n, seed=2)
        history = course(Path(run))
        row = {"run": run, "train_images": n_train, "steps": gen.step, "final_p": round(p, 4),
               "max_p": max((h["p"] or 0) for h in history),
               "seen_p0": signal(gen, *seen, 0.0), "unseen_p0": signal(gen, *unseen, 0.0),
               "seen_p": signal(gen, *seen, p), "unseen_p": signal(gen, *unseen, p),
               "course": history[:: max(1, len(history) // 12)] + history[-1:]}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "course"}), flush=True)
        print("  p course:", " ".join(f"{h['step']}:{h['p']}" for h in row["course"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
