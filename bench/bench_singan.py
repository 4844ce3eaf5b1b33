"""SinGAN benchmarks on CBIS-DDSM malignant patches (issue 6). Results go to bench/RESULTS.md by hand.

    python bench/bench_singan.py train   --out /tmp/singan-bench/train   [--iters 250] [--threads 1] [--index 0]
    python bench/bench_singan.py scaling --out /tmp/singan-bench/scaling --sizes 32 64 128 --iters 20
    python bench/bench_singan.py sifid   --run /tmp/singan-bench/train --out /tmp/singan-bench/sifid --n 16 --others 16
    python bench/bench_singan.py study   --out /tmp/singan-bench/study --groups 2 4 8 --iters 80 --size 48

``train`` trains one SinGAN through the group code (one member, inline executor) and prints wall
time, CPU time (getrusage, this process) and peak RSS. ``scaling`` trains with few iterations per
scale at several image sizes and prints seconds per iteration and an extrapolation to the default
iterations. ``sifid`` samples the trained run and scores the samples against their training image
and against other malignant training images; it also writes a grid (training image, then samples).
``study`` is the small version of the issue's 2/4/8-SinGAN study: a 3-class phantom (healthy /
benign / malignant, malignant the minority), one SinGAN per malignant training image for the
largest group (the smaller groups are its first members, reused, not retrained), then the study
with ``real`` against ``real+synthetic`` from each group, malignant balanced up to the largest
class (the same number of synthetic images for every group).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CBIS = ROOT.parent / "shared" / "data" / "cbis-ddsm-masses"


def _usage() -> dict:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 1),
            "peak_rss_mb": round(max(me.ru_maxrss, kids.ru_maxrss) / 1024, 1)}


def _malignant():
    from oncosynth.data import load_dataset

    ds = load_dataset(CBIS).split("train")
    return ds, sorted((r for r in ds.records if r.label == "malignant"), key=lambda r: r.uid)


def cmd_train(args) -> None:
    from oncosynth.generators import create_generator

    ds, pool = _malignant()
    record = pool[args.index]
    gen = create_generator("singan", iters=args.iters, sifid_net=None)
    list_file = Path(args.out).with_suffix(".list")
    list_file.parent.mkdir(parents=True, exist_ok=True)
    list_file.write_text(record.uid + "\n")
    load0 = os.getloadavg()
    t0, u0 = time.perf_counter(), _usage()
    gen.fit(ds, args.out, class_name="malignant", image_list=list_file, threads=args.threads, progress=False)
    wall = time.perf_counter() - t0
    u1 = _usage()
    summary = json.loads((Path(args.out) / "members" / "member-00" / "summary.json").read_text())
    print(json.dumps({"image": record.uid, "iters": args.iters, "threads": args.threads,
                      "wall_s": round(wall, 1), "cpu_s": round(u1["cpu_s"] - u0["cpu_s"], 1),
                      "peak_rss_mb": u1["peak_rss_mb"], "loadavg_start": load0, "loadavg_end": os.getloadavg(),
                      "scales": [(s["size"], s["seconds"]) for s in summary["scales"]]}, indent=1))


def cmd_scaling(args) -> None:
    from oncosynth.data import load_images
    from oncosynth.generators.singan import SinGAN, train_singan

    torch.set_num_threads(args.threads)
    _, pool = _malignant()
    image = load_images([pool[args.index]])[0]
    rows = []
    for size in args.sizes:
        small = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear",
                                                antialias=True, align_corners=False)[0]
        cfg = {"iters": args.iters}
        t0, c0 = time.perf_counter(), time.process_time()
        _, info = train_singan(small, cfg, seed=0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        per_iter = cpu / args.iters
        rows.append({"size": size, "scales": len(info["sizes"]), "iters": args.iters, "wall_s": round(wall, 1),
                     "cpu_s": round(cpu, 1), "cpu_s_per_iter_all_scales": round(per_iter, 3),
                     "extrapolated_cpu_s_at_default": round(per_iter * SinGAN.defaults["iters"], 0),
                     "loadavg": os.getloadavg()})
        print(json.dumps(rows[-1]), flush=True)
    print("peak_rss_mb", _usage()["peak_rss_mb"])


def cmd_sifid(args) -> None:
    from oncosynth.data import load_images
    from oncosynth.generators import load_generator
    from oncosynth.io import save_grid
    from oncosynth.metrics.sifid import sifid_matrix

    torch.set_num_threads(args.threads)
    gen = load_generator(args.run)
    source = gen.member_info[0]["source"]
    _, pool = _malignant()
    own = next(r for r in pool if r.uid == source)
    others = [r for r in pool if r.uid != source][: args.others]
    real = load_images([own], size=gen.size, channels=gen.channels)
    other_images = load_images(others, size=gen.size, channels=gen.channels)
    samples = gen.sample(args.n, gen.classes[0], seed=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat([real, samples[:15]]), out / "grid.png", nrow=4)
    coarse = [gen.sample(3, gen.classes[0], seed=100, start_scale=k) for k in (1, 3, 5)
              if k < gen.n_scales]
    save_grid(torch.cat([real, *coarse]) if coarse else real, out / "grid-start-scales.png", nrow=3)
    results = {}
    for net in args.nets:
        m_own, name = sifid_matrix(real, samples, net)
        m_other, _ = sifid_matrix(other_images, samples, net)
        m_real_other, _ = sifid_matrix(real, other_images, net)
        results[name] = {"samples_vs_own": [float(m_own.mean()), float(m_own.std())],
                         "samples_vs_other_malignant": [float(m_other.mean()), float(m_other.std())],
                         "own_image_vs_other_malignant": [float(m_real_other.mean()), float(m_real_other.std())]}
    print(json.dumps({"run": args.run, "image": source, "n_samples": args.n, "n_others": len(others),
                      "sifid_mean_std": results}, indent=1))


def _reuse_executor():
    from oncosynth.parallel.executor import Executor, Outcome

    class ReuseMembers(Executor):
        """Runs each unit inline after copying the same member (same image, seed, settings) from a bigger
        group, so the unit finds it finished and only returns its summary: nothing is trained twice."""

        name = "reuse"

        def __init__(self, source: Path):
            super().__init__()
            self.source = Path(source)

        def run(self, units):
            for unit in units:
                target = Path(unit.kwargs["folder"])
                if not target.exists():
                    shutil.copytree(self.source / "members" / unit.key, target)
                yield Outcome(unit.key, value=unit.fn(*unit.args, **unit.kwargs))

    return ReuseMembers


def cmd_study(args) -> None:
    from oncosynth.data import load_dataset
    from oncosynth.data.phantom import PhantomConfig, write_phantom
    from oncosynth.generators import create_generator
    from oncosynth.study import parse_config, run_study

    torch.set_num_threads(args.threads)
    ReuseMembers = _reuse_executor()
    out = Path(args.out)
    t0, u0 = time.perf_counter(), _usage()
    out.mkdir(parents=True, exist_ok=True)
    if args.data:  # real data (e.g. CBIS-DDSM): SinGANs at --size (images resampled), same study otherwise
        phantom = Path(args.data)
    else:
        phantom = write_phantom(out / "phantom", PhantomConfig(n=args.n, size=args.size, malignant_fraction=0.2,
                                                               healthy_fraction=0.4, difficulty="medium", seed=0))
    ds = load_dataset(phantom).split("train")
    pool = sorted((r for r in ds.records if r.label == "malignant"), key=lambda r: r.uid)
    biggest = max(args.groups)
    import numpy as np

    chosen = [pool[i] for i in np.sort(np.random.default_rng(0).choice(len(pool), biggest, replace=False))]
    timings = {}
    for k in sorted(args.groups, reverse=True):  # the biggest first; smaller groups reuse its members
        run = out / f"singan-{k}"
        listing = out / f"singan-{k}.list"
        listing.write_text("\n".join(r.uid for r in chosen[:k]) + "\n")
        began = time.perf_counter()
        gen = create_generator("singan", iters=args.iters, max_size=args.size)
        executor = None if k == biggest else ReuseMembers(out / f"singan-{biggest}")
        gen.fit(phantom, run, class_name="malignant", image_list=listing, seed=0, workers=args.workers,
                executor=executor, progress=False, resume=True)
        timings[k] = round(time.perf_counter() - began, 1)
        print(f"group {k}: {timings[k]} s", flush=True)
    u1 = _usage()
    arms = [{"name": "real", "kind": "real"}]
    arms += [{"name": f"real+singan{k}", "kind": "real+synthetic",
              "synthetic": {"generator": str(out / f"singan-{k}"), "classes": ["malignant"],
                            **({"ratio": args.ratio} if args.ratio else {"balance": True})}}
             for k in args.groups]
    config = parse_config({
        "name": f"singan {args.groups} on {'the 3-class phantom' if not args.data else args.data}",
        "data": {"path": str(phantom), "size": args.size, "channels": 1},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": args.epochs, "batch_size": 32, "lr": 0.002, "warmup_epochs": 0.5},
        "arms": arms, "fractions": args.fractions, "seeds": args.seeds, "bootstrap": 500, "report_samples": 8})
    report = run_study(config, out / "study", device="cpu", progress=False)
    u2 = _usage()
    print(json.dumps({"report": str(report), "group_seconds": timings, "singan_cpu_s": u1["cpu_s"] - u0["cpu_s"],
                      "study_cpu_s": round(u2["cpu_s"] - u1["cpu_s"], 1), "wall_s": round(time.perf_counter() - t0, 1),
                      "loadavg": os.getloadavg()}, indent=1))


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    p.add_argument("--out", required=True)
    p.add_argument("--iters", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--index", type=int, default=0)
    p = sub.add_parser("scaling")
    p.add_argument("--out", default="")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--index", type=int, default=0)
    p = sub.add_parser("sifid")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--others", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nets", nargs="+", default=["random-cnn:0"])
    p = sub.add_parser("study")
    p.add_argument("--out", required=True)
    p.add_argument("--groups", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--iters", type=int, default=80)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.2, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default="", help="a data set instead of the phantom (e.g. CBIS-DDSM)")
    p.add_argument("--ratio", type=float, default=0.0, help="synthetic malignant images per real training "
                   "image (default: balance malignant up to the largest class)")
    args = parser.parse_args()
    {"train": cmd_train, "scaling": cmd_scaling, "sifid": cmd_sifid, "study": cmd_study}[args.cmd](args)


if __name__ == "__main__":
    main()
