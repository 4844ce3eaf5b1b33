"""Speed under load (issue 16): the demo's GAN step and one study epoch, alone and beside a busy process.

Each measurement runs in a fresh child process, because the OpenMP waiting
behaviour is fixed when torch is imported. Settings compared:

  default   what torch does without oncosynth's policy: its default thread count and
            libgomp's default wait (spin 300 000 iterations; GOMP_SPINCOUNT=300000 is
            that default written out, and it also switches oncosynth's policy off)
  omp1      OMP_NUM_THREADS=1
  passive   OMP_WAIT_POLICY=PASSIVE (sleep at once)
  policy    oncosynth's choice (``oncosynth.threads``): nothing set, oncosynth decides
  spin=N    GOMP_SPINCOUNT=N, for choosing N

"Busy" is one extra process running a pure-Python busy loop for the whole
measurement (one core of the two taken). A child runs its workload until
``--steps`` steps or ``--max-seconds`` pass and reports seconds per step, so a
slow setting cannot stall the benchmark. The 1-minute load average is recorded
before every measurement: numbers taken while other jobs ran are not comparable
with a quiet machine's.

  PYTHONPATH=src .venv/bin/python bench/bench_load.py --out bench/load.json
  PYTHONPATH=src .venv/bin/python bench/bench_load.py --settings default spin=1000 spin=10000 \
      --workloads gan --repeats 3
  PYTHONPATH=src .venv/bin/python bench/bench_load.py --report bench/load_gan.json bench/load_study.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"default": {"GOMP_SPINCOUNT": "300000"}, "omp1": {"OMP_NUM_THREADS": "1"},
            "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "policy": {}}
POLICY_KNOBS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


# ------------------------------------------------------------- child side ----
def _phantom(n: int):
    import torch

    from oncosynth.data.phantom import PhantomConfig, make_phantom

    images, labels, _, splits = make_phantom(PhantomConfig(n=n, malignant_fraction=0.4, size=64, seed=0))
    uint8 = torch.from_numpy((images * 255).round().astype("uint8"))
    classes = sorted(set(labels))
    index = torch.tensor([classes.index(label) for label in labels])
    return uint8, index, classes, splits


def gan_steps(steps: int, max_seconds: float) -> tuple[int, float]:
    """The demo's GAN (MCGAN, width 16, 64 px, batch 16): train steps as the training loop takes them."""
    import torch

    from oncosynth.generators import create_generator

    images, labels, classes, _ = _phantom(200)
    gen = create_generator("cdcgan", width=16, size=64, batch_size=16)
    gen.configure(classes, 1, 64)
    torch.manual_seed(0)
    reals = lambda idx: images[idx].float() / 127.5 - 1  # noqa: E731 - as generators.training feeds them
    idx = torch.randint(len(images), (16,))
    gen.train_step(reals(idx), labels[idx])  # warm-up: allocator, first-call costs
    start, done = time.perf_counter(), 0
    while done < steps and time.perf_counter() - start < max_seconds:
        idx = torch.randint(len(images), (16,))
        gen.train_step(reals(idx), labels[idx])
        done += 1
    return done, time.perf_counter() - start


def study_steps(steps: int, max_seconds: float) -> tuple[int, float]:
    """One epoch of the demo study's classifier (resnet10t, 64 px, batch 32, augmented) on ~400 images."""
    import torch

    from oncosynth.classifiers import create_classifier
    from oncosynth.classifiers.augment import AugmentConfig, augment_batch

    images, labels, classes, splits = _phantom(600)
    train = [i for i, s in enumerate(splits) if s == "train"]
    images, labels = images[train], labels[train]
    model = create_classifier("resnet10t", 1, len(classes), 64, classes=classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    epoch = len(images) // 32
    steps = min(steps, epoch)

    def step() -> None:
        idx = torch.randint(len(images), (32,), generator=generator)
        batch = augment_batch(images[idx].float() / 255, AugmentConfig(), generator)
        loss = torch.nn.functional.cross_entropy(model(batch), labels[idx], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start, done = time.perf_counter(), 0
    while done < steps and time.perf_counter() - start < max_seconds:
        step()
        done += 1
    return done, time.perf_counter() - start


def child(workload: str, steps: int, max_seconds: float) -> None:
    import oncosynth.threads  # noqa: F401 - the policy applies on import, as for every user of the library
    import torch

    done, seconds = (gan_steps if workload == "gan" else study_steps)(steps, max_seconds)
    print(json.dumps({"steps": done, "seconds": seconds, "threads": torch.get_num_threads(),
                      "env": {k: os.environ.get(k) for k in POLICY_KNOBS}}))


# ------------------------------------------------------------ parent side ----
def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(workload: str, setting: str, busy: bool, steps: int, max_seconds: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in POLICY_KNOBS}
    if setting.startswith("spin="):
        env["GOMP_SPINCOUNT"] = setting[5:]
    else:
        env.update(SETTINGS[setting])
    env["PYTHONPATH"] = str(ROOT / "src")
    load = os.getloadavg()[0]
    neighbour = _busy() if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--child", workload, "--steps", str(steps),
                              "--max-seconds", str(max_seconds)], env=env, capture_output=True, text=True,
                             check=True).stdout
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    result = json.loads(out.strip().splitlines()[-1])
    return {"workload": workload, "setting": setting, "busy": busy, "load_1min_before": round(load, 2),
            "s_per_step": result["seconds"] / max(result["steps"], 1), **result}


def table(rows: list[dict]) -> str:
    """Median seconds per step per (workload, setting, busy); ratios against alone and against default-alone."""
    from statistics import median

    cell: dict[tuple, list[float]] = {}
    loads: dict[tuple, list[float]] = {}
    for r in rows:
        cell.setdefault((r["workload"], r["setting"], r["busy"]), []).append(r["s_per_step"])
        loads.setdefault((r["workload"], r["setting"], r["busy"]), []).append(r["load_1min_before"])
    lines = ["| workload | setting | alone (s/step) | beside busy (s/step) | speed beside busy / alone "
             "| alone speed / default alone | load avg before (alone; busy) |", "|---|---|---:|---:|---:|---:|---|"]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        base = cell.get((workload, "default", False))
        for setting in dict.fromkeys(r["setting"] for r in rows):
            alone, busy = cell.get((workload, setting, False)), cell.get((workload, setting, True))
            if alone is None and busy is None:
                continue
            a = median(alone) if alone else None
            b = median(busy) if busy else None
            fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
            lines.append(f"| {workload} | {setting} | {fmt(a)} | {fmt(b)} | "
                         f"{'–' if not (a and b) else f'{a / b:.2f}×'} | "
                         f"{'–' if not (a and base) else f'{median(base) / a:.2f}×'} | "
                         f"{', '.join(map(str, loads.get((workload, setting, False), [])))}; "
                         f"{', '.join(map(str, loads.get((workload, setting, True), [])))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("gan", "study"))
    parser.add_argument("--workloads", nargs="+", default=["gan", "study"], choices=("gan", "study"))
    parser.add_argument("--settings", nargs="+", default=["default", "omp1", "passive", "policy"])
    parser.add_argument("--conditions", nargs="+", default=["alone", "busy"], choices=("alone", "busy"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", type=Path, nargs="+", help="print the table of earlier --out files instead")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.max_seconds)
        return
    if args.report:
        print(table([row for path in args.report for row in json.loads(path.read_text())["rows"]]))
        return
    rows = []
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits every setting alike
        for workload in args.workloads:
            for setting in args.settings:
                for condition in args.conditions:
                    row = measure(workload, setting, condition == "busy", args.steps, args.max_seconds)
                    rows.append(row)
                    print(f"{workload:5s} {setting:10s} {condition:5s} {row['s_per_step']:.4f} s/step "
                          f"({row['steps']} steps, {row['threads']} threads, load {row['load_1min_before']})",
                          flush=True)
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": f"{platform.node()} {os.cpu_count()} CPUs",
                                        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                                        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
