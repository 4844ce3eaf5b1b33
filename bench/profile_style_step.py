"""Where one style-transfer step spends its CPU time, at batch 1 and batch 16 (torch.profiler, 20 steps).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/profile_style_step.py encoder:bench/out/style/anomaly-cpu
"""
import sys

import torch
from torch.profiler import profile, ProfilerActivity
from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer
torch.set_num_threads(1)
t = StyleTransfer(sys.argv[1] if len(sys.argv) > 1 else "random-cnn:0")
for n in (1, 16):
    c = torch.rand(n,1,128,128); s = torch.rand(n,1,128,128)
    t.run(c, s, StyleSettings(steps=3))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t.run(c, s, StyleSettings(steps=20))
    print(n, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
