"""Kernel time with glibc's default heap against oncosynth's heap policy (src/oncosynth/heap.py).

Each workload runs in a fresh process twice, once with ``ONCOSYNTH_HEAP=default`` (glibc's own
thresholds) and once with ``ONCOSYNTH_HEAP=keep`` (the policy from import on; DP training applies it
itself, but this script builds its DP step directly), one torch thread, random images (the time does
not depend on the pixels). After two warm-up steps it times the workload's step count (``WORKLOADS``)
and reports user and kernel CPU ms per image and the peak resident size.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_heap.py --json bench/results/heap.json

Workloads: the study's classifier (resnet10t, 64 px, batch 32) plain and under DP-SGD (opacus
``hooks``, GroupNorm layout, as a DP cell), and one training step of each ``cpu`` generator preset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

WORKLOADS = {  # name: (steps timed, description)
    "classifier": (20, "resnet10t 64 px, batch 32"),
    "classifier-dp": (12, "resnet10t 64 px, batch 32, DP-SGD (opacus hooks)"),
    "cdcgan": (40, "MCGAN `cpu` preset, 128 px"),
    "stylegan2-ada": (12, "StyleGAN2-ADA `cpu` preset, 64 px"),
    "ddpm": (12, "DDPM `cpu` preset, 64 px"),
}


def classifier_step(dp: bool):
    import torch
    from torch import nn
    from oncosynth.classifiers.model import Classifier
    model = Classifier("resnet10t", 1, 2, 64, classes=["benign", "malignant"])
    model.set_input_handling("percentile")
    batches = 2 + WORKLOADS["classifier-dp" if dp else "classifier"][0]
    images, labels = torch.rand(32 * batches, 1, 64, 64), torch.randint(0, 2, (32 * batches,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=32)
    opt, loss_fn = torch.optim.AdamW(model.parameters(), lr=3e-4), nn.CrossEntropyLoss()
    if dp:
        from opacus import PrivacyEngine
        model.prepare_for_dp()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        model, opt, loader = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=opt, data_loader=loader, criterion=loss_fn, noise_multiplier=1.0,
            max_grad_norm=1.0, grad_sample_mode="hooks")
    model.train()
    batches_iter = (batch for batch in iter(loader) if len(batch[0]))

    def step() -> int:
        x, y = next(batches_iter)
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        return len(x)
    return step


def generator_step(method: str):
    import torch
    from oncosynth.generators import create_generator
    size = 128 if method == "cdcgan" else 64
    gen = create_generator(method, preset="cpu")
    gen.configure(["benign", "malignant"], 1, size)
    gen.class_counts = torch.tensor([100, 100])
    batch = int(gen.config["batch_size"])

    def step() -> int:
        reals = torch.rand(batch, 1, size, size) * 2 - 1
        gen.train_step(reals, torch.randint(0, 2, (batch,)))
        gen.step += 1
        return batch
    return step


def child(workload: str) -> None:
    import oncosynth  # noqa: F401  (the heap and thread policies, before torch)
    import torch
    from oncosynth.heap import status
    torch.manual_seed(0)
    step = classifier_step(workload == "classifier-dp") if workload.startswith("classifier") \
        else generator_step(workload)
    for _ in range(2):
        step()
    start, images = os.times(), 0
    for _ in range(WORKLOADS[workload][0]):
        images += step()
    end = os.times()
    print(json.dumps({"workload": workload, "policy": status()["policy"], "images": images,
                      "user_ms_per_image": 1000 * (end.user - start.user) / images,
                      "kernel_ms_per_image": 1000 * (end.system - start.system) / images,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="Default: all")
    ap.add_argument("--json", type=Path, help="Write the rows here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    rows = []
    for workload in args.workload or list(WORKLOADS):
        pair = {}
        for heap, label in (("default", "default"), ("keep", "policy")):  # glibc's thresholds, then the policy
            env = {**os.environ, "ONCOSYNTH_HEAP": heap, "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, __file__, "--child", workload], env=env, check=True,
                                 capture_output=True, text=True).stdout
            pair[label] = json.loads(out.strip().splitlines()[-1])
        total = {k: v["user_ms_per_image"] + v["kernel_ms_per_image"] for k, v in pair.items()}
        rows.append({"workload": workload, "what": WORKLOADS[workload][1], "glibc_default": pair["default"],
                     "oncosynth_policy": pair["policy"], "speed_ratio": total["default"] / total["policy"]})
        print(f"{workload:14s} CPU ms/image (user + kernel): glibc {pair['default']['user_ms_per_image']:6.1f} + "
              f"{pair['default']['kernel_ms_per_image']:5.1f}  policy {pair['policy']['user_ms_per_image']:6.1f} + "
              f"{pair['policy']['kernel_ms_per_image']:5.1f}  ratio {rows[-1]['speed_ratio']:.2f}x  peak RSS MiB "
              f"{pair['default']['peak_rss_mib']:.0f} -> {pair['policy']['peak_rss_mib']:.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": os.uname().machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
