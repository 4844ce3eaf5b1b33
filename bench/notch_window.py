"""Choosing the notch filter's window: the 2-px pattern it leaves in DDPM samples, the change it makes to real ones.

    PYTHONPATH=src python bench/notch_window.py RUN --data ../shared/data/cbis-ddsm-masses \
        --json bench/results/notch-window.json --grid bench/ddpm_notch_window.png

RUN is a trained DDPM run folder. ``--n`` images per class are sampled once (the model's guidance and
DDIM steps) and filtered at each window; the real images are the data set's training split (never
validation or test), resampled to the model's size. For each window: the period-2 amplitude
(``metrics.artefacts``, grey levels) of the samples and of the real images after the filter, and
the mean and largest change the filter makes to a real image. Also two remedies that act on the
sampler instead of its output, for the record: moving the patch grid by one offset per DDIM step,
and averaging the U-Net's prediction over all offsets of the grid at every step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from oncosynth.data import load_dataset, load_images
from oncosynth.generators import load_generator
from oncosynth.generators.filters import nyquist_notch
from oncosynth.io import save_grid
from oncosynth.metrics.artefacts import period2_amplitude

WINDOWS = (1.0, 1.5, 2.5, 3.5)


def _grid_moved_sampler(gen, z, labels, every_offset: bool) -> torch.Tensor:
    """DDIM as DDPM.generate, but the U-Net sees the image moved within its patch grid (reflect-padded by
    one downsampling factor, cropped back): one offset per step in turn, or the mean over all offsets."""
    patch, factor, size = int(gen.config["patch"]), gen.downsampling(), gen.size
    offsets = [(dy, dx) for dy in range(patch) for dx in range(patch)]
    guidance = float(gen.config["guidance"])
    ddim = gen._ddim(int(gen.config["sample_steps"]))
    x, null = z.view(len(z), gen.channels, size, size), torch.full_like(labels, len(gen.classes))

    def predict(x, tt, dy, dx):
        padded = F.pad(torch.cat([x, x]), (dx, factor - dx, dy, factor - dy), mode="reflect")
        out = gen.ema(padded, torch.cat([tt, tt]), torch.cat([labels, null]))[..., dy:dy + size, dx:dx + size]
        cond, uncond = out.chunk(2)
        return uncond + guidance * (cond - uncond)

    for k, t in enumerate(ddim.timesteps.tolist()):
        tt = torch.full((len(z),), t, dtype=torch.long)
        chosen = offsets if every_offset else [offsets[k % len(offsets)]]
        out = torch.stack([predict(x, tt, dy, dx) for dy, dx in chosen]).mean(0)
        x, _ = ddim.step(out, t, x)
    return (x.clamp(-1, 1) + 1) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--n", type=int, default=32, help="images per class")
    parser.add_argument("--real", type=int, default=400, help="training images to filter")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grid", type=Path, help="PNG: 8 samples per row, unfiltered then each window")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = load_generator(args.run)
    started = time.perf_counter()
    samples = torch.cat([gen.sample(args.n, c, seed=0) for c in gen.classes])
    seconds = time.perf_counter() - started
    train = load_dataset(args.data).split("train")
    real = load_images(train.subset(train.records[: args.real]), size=gen.size, channels=gen.channels)
    rows = [{"window": 0, "period2_samples": period2_amplitude(samples), "period2_real": period2_amplitude(real),
             "real_change_mean": 0.0, "real_change_max": 0.0}]
    grid = [samples[:8]]
    for window in WINDOWS:
        filtered, real_filtered = nyquist_notch(samples, window).clamp(0, 1), nyquist_notch(real, window).clamp(0, 1)
        change = (real_filtered - real).abs() * 255
        rows.append({"window": window, "period2_samples": period2_amplitude(filtered),
                     "period2_real": period2_amplitude(real_filtered),
                     "real_change_mean": float(change.mean()), "real_change_max": float(change.max())})
        grid.append(filtered[:8])
        print(json.dumps(rows[-1]), flush=True)
    # the sampler-side remedies, on the first class's latents
    z = torch.stack([torch.randn(gen.z_dim, generator=torch.Generator().manual_seed(i)) for i in range(args.n)])
    labels = torch.zeros(args.n, dtype=torch.long)
    with torch.no_grad():
        remedies = {"grid moved one offset per step": period2_amplitude(_grid_moved_sampler(gen, z, labels, False)),
                    "mean over all grid offsets every step": period2_amplitude(_grid_moved_sampler(gen, z, labels, True)),
                    "as trained (same latents)": period2_amplitude(samples[: args.n])}
    print(json.dumps(remedies))
    summary = {"run": str(args.run), "images_per_class": args.n, "real_images": len(real),
               "guidance": gen.config["guidance"], "ddim_steps": gen.config["sample_steps"],
               "sampling_seconds": round(seconds, 1), "windows": rows, "sampler_remedies": remedies}
    if args.grid:
        save_grid(F.interpolate(torch.cat(grid), scale_factor=2, mode="nearest"), args.grid, nrow=8)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
