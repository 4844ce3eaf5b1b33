"""Where one style-transfer step spends its CPU time, at batch 1 and batch 16 (torch.profiler, 20 steps).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/profile_style_step.py encoder:bench/out/style/anomaly-cpu
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer


def main() -> None:
    torch.set_num_threads(1)
    transfer = StyleTransfer(sys.argv[1] if len(sys.argv) > 1 else "random-cnn:0")
    for batch in (1, 16):
        content, style = torch.rand(batch, 1, 128, 128), torch.rand(batch, 1, 128, 128)
        transfer.run(content, style, StyleSettings(steps=3))  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            transfer.run(content, style, StyleSettings(steps=20))
        print(f"batch {batch}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
