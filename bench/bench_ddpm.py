"""DDPM benchmarks: training and sampling speed, memorised share, a comparison grid.

    # images/s in training and in sampling (by DDIM steps, with and without guidance), 64 px CBIS-DDSM
    PYTHONPATH=src python bench/bench_ddpm.py speed --data ../shared/data/cbis-ddsm-masses --size 64
    # a trained run: samples next to real patches and the peer's images; memorised share of N samples
    PYTHONPATH=src python bench/bench_ddpm.py look --run bench/out/ddpm-cpu-cbis64 \
        --data ../shared/data/cbis-ddsm-masses --peer ../shared/data/mcgan-synthetic-cbis-ddsm --n 64
    # the 2-px patching grid, as a number: power at the Nyquist frequency / one frequency below
    PYTHONPATH=src python bench/bench_ddpm.py grid --set real=../shared/data/cbis-ddsm-masses:test \
        --set ddpm=bench/out/ddpm-cpu-cbis64-60cpu-samples-1500 --size 64 --out bench/results/ddpm-grid.json

The training run itself is ``bench/bench_generators.py --method ddpm --preset cpu`` (CPU-time budget,
chunked and resumable). Speeds are per process CPU-second (``time.process_time``) and per wall second;
on a shared machine only the first is comparable between runs. Results: bench/ddpm_*.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from oncosynth.data import cached_tensors, load_dataset
from oncosynth.errors import DataError
from oncosynth.generators import create_generator, load_generator
from oncosynth.io import save_grid, write_json

HERE = Path(__file__).resolve().parent


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(wall s, CPU s) per call, after one warm-up call."""
    fn()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - w0) / repeats, (time.process_time() - c0) / repeats


def speed(args: argparse.Namespace) -> None:
    dataset = load_dataset(args.data)
    train = dataset.split("train") if "train" in dataset.splits else dataset
    images, labels = cached_tensors(train, args.size, 1)
    gen = create_generator("ddpm", preset=args.preset, size=args.size)
    torch.manual_seed(0)
    gen.configure(list(train.classes), int(images.shape[1]), args.size)
    batch = int(gen.config["batch_size"])

    def step():
        idx = torch.randint(len(images), (batch,))
        gen.train_step(images[idx].float() / 127.5 - 1, labels[idx].long())
        gen.step += 1

    wall, cpu = _timed(step, args.train_steps)
    rows = [{"what": "train", "batch": batch, "s_per_step_wall": round(wall, 3), "s_per_step_cpu": round(cpu, 3),
             "img_per_s_wall": round(batch / wall, 2), "img_per_cpu_s": round(batch / cpu, 2)}]
    n = args.sample_batch
    z = torch.randn(n, gen.z_dim)
    y = torch.arange(n) % len(gen.classes)
    for steps in args.ddim_steps:
        for guidance in (1.0, float(gen.config["guidance"])):
            wall, cpu = _timed(lambda: gen.generate(z, y, guidance=guidance, steps=steps), 1)
            rows.append({"what": "sample", "ddim_steps": steps, "guidance": guidance, "batch": n,
                         "img_per_s_wall": round(n / wall, 2), "img_per_cpu_s": round(n / cpu, 2)})
            print(rows[-1], flush=True)
    result = {"preset": args.preset, "size": args.size, "config": gen.config, "threads": torch.get_num_threads(),
              "params": sum(p.numel() for p in gen.unet.parameters()), "machine": platform.processor() or
              platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "loadavg_1min": round(_loadavg(), 2), "rows": rows}
    write_json(HERE / f"ddpm_speed_{args.preset}_{args.size}.json", result)
    print(json.dumps(rows, indent=1))


def look(args: argparse.Namespace) -> None:
    """Grid (8 per class of ours, of the real training split, of the peer) and the memorised share."""
    from oncosynth.metrics.memorisation import PixelCopyCheck

    gen = load_generator(args.run)
    dataset = load_dataset(args.data)
    train = dataset.split("train")
    real, labels = cached_tensors(train, gen.size, gen.channels)
    rows = [gen.sample(8, c, seed=1000, guidance=args.guidance, steps=args.ddim_steps) for c in gen.classes]
    rows += [real[torch.nonzero(labels == i).flatten()[:8]].float() / 255 for i in range(len(gen.classes))]
    if args.peer:
        from oncosynth.data import load_images

        peer = load_dataset(args.peer, label_from_name=True)
        for c in gen.classes:
            rows.append(load_images([r for r in peer.records if r.label == c][:8], size=gen.size, channels=gen.channels))
    name = Path(args.run).name
    save_grid(torch.cat(rows), HERE / f"ddpm_{name}_grid.png", nrow=8)

    if args.n < 1:
        return
    t0 = time.perf_counter()
    check = PixelCopyCheck(real.float() / 255, [r.patient for r in train.records])
    samples = {c: gen.sample(args.n, c, seed=20_000, guidance=args.guidance, steps=args.ddim_steps)
               for c in gen.classes}
    flagged = {c: check.check(x) for c, x in samples.items()}
    result = {"run": str(args.run), "step": gen.step, "guidance": args.guidance, "ddim_steps": args.ddim_steps,
              "n_per_class": args.n, "space": "pixels (the memorisation check without a feature net)",
              "cutoff": check.cutoff,
              "flagged": {c: int(f[0].sum()) for c, f in flagged.items()},
              "median_ratio": {c: round(float(np.median(f[1])), 3) for c, f in flagged.items()},
              "min_ratio": {c: round(float(f[1].min()), 3) for c, f in flagged.items()},
              "seconds": round(time.perf_counter() - t0, 1)}
    write_json(HERE / f"ddpm_{name}_memorised.json", result)
    print(json.dumps(result, indent=1))


def nyquist_excess(images: torch.Tensor) -> dict[str, float]:
    """Power at the highest spatial frequency over the power one frequency below it.

    A U-Net run on a 2x2 pixel-unshuffled image predicts each 2-px block from one position, which
    leaves a pattern of period 2: power at the Nyquist frequency (horizontal, vertical and the
    (pi, pi) corner). Natural images fall off smoothly there, so real patches give about 1 (or less
    at the corner) and the grid gives much more. Mean power spectrum over the images, grey levels.
    """
    x = images.float().mean(1)
    x = x - x.mean(dim=(-1, -2), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).mean(0)
    n = power.shape[-1] // 2
    return {"horizontal": round(float(power[:, n].mean() / power[:, n - 1].mean()), 3),
            "vertical": round(float(power[n, :].mean() / power[n - 1, :].mean()), 3),
            "corner": round(float(power[n, n] / power[n - 1, n - 1]), 3), "images": int(len(images))}


def grid(args: argparse.Namespace) -> None:
    results = {"size": args.size, "measure": "nyquist power / power one frequency below", "sets": {}}
    for item in args.set:
        name, _, where = item.partition("=")
        path, _, split = where.partition(":")
        try:
            dataset = load_dataset(path)
        except DataError:  # a generate folder: class from the file name
            dataset = load_dataset(path, label_from_name=True)
        if split:
            dataset = dataset.split(split)
        records = dataset.records[: args.max_images]
        images, _ = cached_tensors(dataset.subset(records), size=args.size)
        results["sets"][name] = {"path": where, **nyquist_excess(images)}
        print(f"{name:>24}: {results['sets'][name]}")
    if args.out:
        write_json(args.out, results)


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--data", required=True)
    sp.add_argument("--size", type=int, default=64)
    sp.add_argument("--preset", default="cpu")
    sp.add_argument("--train-steps", type=int, default=10)
    sp.add_argument("--sample-batch", type=int, default=32)
    sp.add_argument("--ddim-steps", type=int, nargs="+", default=[10, 25, 50])
    lk = sub.add_parser("look")
    lk.add_argument("--run", required=True)
    lk.add_argument("--data", required=True)
    lk.add_argument("--peer", default=None)
    lk.add_argument("--n", type=int, default=64, help="samples per class for the memorised share (0: grid only)")
    lk.add_argument("--guidance", type=float, default=None)
    lk.add_argument("--ddim-steps", type=int, default=None)
    gr = sub.add_parser("grid")
    gr.add_argument("--set", action="append", required=True, metavar="NAME=PATH[:SPLIT]")
    gr.add_argument("--size", type=int, default=64)
    gr.add_argument("--max-images", type=int, default=1000)
    gr.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"speed": speed, "look": look, "grid": grid}[args.command](args)


if __name__ == "__main__":
    main()
