"""Per-image CPU time of one DP-SGD training step by opacus grad_sample_mode, against plain training.

    OMP_NUM_THREADS=1 python bench/bench_dp_modes.py plain hooks functorch

resnet10t at 64 px, 1 channel, percentile normalisation, batch 32, AdamW; DP arms use the GroupNorm
layout (Classifier.prepare_for_dp), noise 1.0, clip 1.0. Prints the median over 10 steps after 2 warm-up steps.
"""
import time, warnings, copy, sys
import oncosynth  # thread policy first
import torch
from torch import nn
warnings.filterwarnings("ignore")
from oncosynth.classifiers.model import Classifier
from opacus import PrivacyEngine
torch.manual_seed(0)
x = torch.rand(32 * 12, 1, 64, 64); y = torch.randint(0, 2, (32 * 12,))
def run(mode):
    torch.manual_seed(0)
    m = Classifier("resnet10t", 1, 2, 64, classes=["b", "m"])
    m.set_input_handling("percentile")
    if mode != "plain":
        m.prepare_for_dp()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    crit = nn.CrossEntropyLoss()
    if mode != "plain":
        m, opt, loader = PrivacyEngine(accountant="rdp").make_private(module=m, optimizer=opt, data_loader=loader,
            criterion=crit, noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)
    m.train(); times = []
    for i, (xb, yb) in enumerate(loader):
        if len(xb) == 0: continue
        t = time.process_time()
        opt.zero_grad(); loss = crit(m(xb), yb); loss.backward(); opt.step()
        times.append((time.process_time() - t) / len(xb))
    times = sorted(times[2:])
    return times[len(times) // 2]
for mode in sys.argv[1:]:
    try:
        print(mode, "CPU ms/image (median)", round(1000 * run(mode), 2), flush=True)
    except Exception as e:
        print(mode, "failed:", type(e).__name__, str(e)[:200], flush=True)
