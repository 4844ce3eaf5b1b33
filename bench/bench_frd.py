"""Batched FRD radiomics against PyRadiomics: per-feature parity, FRD parity, speed.

1. Parity per feature: the batched backend against PyRadiomics 3.0.1 with
   frd-score 1.0.1's v1 settings on all 402 CBIS-DDSM test patches (128 px),
   300 PCam validation patches as grey PNGs (96 px) and the 1,000 peer (MCGAN)
   images: max relative difference per feature (|ours - ref| / |ref|).
2. FRD parity: the peer set (1,000) against CBIS test (402), from PyRadiomics'
   features (the package's v1 statistics, ``frd_from_features``; the test suite
   checks it equals ``frd_score.compute_frd``) and from the batched features.
3. Speed: images/s of extraction, PyRadiomics in 1 and 2 processes (a small
   fresh sample; not cached) and the batched backend in 1 and 2 processes of
   one thread each (the 402 CBIS test patches; the other sets are extracted
   once, with 2);
   then the goal, FRD of all 3,000 peer images against the 402 test patches
   with the batched backend on 2 processes, cold cache, files to value. Wall
   seconds are recorded with the load average (the machine is shared).

PyRadiomics' features come from the scratch cache of ``bench/frd_sets.py`` (run that first).

    PYTHONPATH=src python bench/bench_frd.py --data ../shared/data --out bench/results/frd
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from frd_sets import DEFAULT_SCRATCH, image_set, reference_features  # noqa: E402

from oncosynth.metrics import frd as frd_lib  # noqa: E402
from oncosynth.metrics.radiomics import feature_names  # noqa: E402
from oncosynth.metrics.radiomics.images import extract_files  # noqa: E402

SETS = ("cbis-test", "pcam-300", "mcgan-1000")
TOLERANCE = 1e-4


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (worker pools)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn):
    """(result, wall seconds, CPU seconds). On a shared machine the CPU seconds are the steadier
    measure: wall time depends on how many other jobs share the cores."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - wall, cpu_seconds() - cpu


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    diff = np.abs(ours - reference)
    return np.divide(diff, np.abs(reference), out=np.where(diff == 0, 0.0, np.inf), where=reference != 0)


def pyradiomics_rate(files: list[Path], workers: int) -> dict:
    from frd_sets import _extract

    import multiprocessing as mp

    def run():
        if workers == 1:
            for f in files:
                _extract(str(f))
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                list(pool.imap_unordered(_extract, [str(f) for f in files], chunksize=2))

    _, seconds, cpu = timed(run)
    return {"images": len(files), "processes": workers, "seconds": round(seconds, 2),
            "images_per_s": round(len(files) / seconds, 3), "cpu_ms_per_image": round(1000 * cpu / len(files), 1),
            "load": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--out", type=Path, default=Path("bench/results/frd"))
    parser.add_argument("--pyradiomics-sample", type=int, default=16, help="images timed per PyRadiomics setting")
    parser.add_argument("--skip-goal", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = feature_names()
    report: dict = {"machine": f"{platform.node()} {os.cpu_count()} CPUs, torch {torch.__version__}",
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sets": {}, "speed": {}}

    files, ours, refs = {}, {}, {}
    for name in SETS:
        files[name] = image_set(name, args.data, args.scratch)
        refs[name], ref_names = reference_features(files[name], args.scratch)
        assert ref_names == names, "PyRadiomics names differ from ours"
        for workers in ((1, 2) if name == "cbis-test" else (2,)):
            ours[name], wall, cpu = timed(lambda: extract_files(files[name], workers=workers))
            report["speed"][f"batched {name} {workers} process(es)"] = {
                "images": len(files[name]), "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                "images_per_s": round(len(files[name]) / wall, 1),
                "cpu_ms_per_image": round(1000 * cpu / len(files[name]), 1), "load": load()}
            print(f"batched {name}, {workers} process(es): {len(files[name]) / wall:.1f} img/s, "
                  f"{1000 * cpu / len(files[name]):.1f} CPU-ms/img (load {load()})", flush=True)

    rows, worst_all = [], np.zeros(len(names))
    for name in SETS:
        rel = relative_difference(ours[name], refs[name])
        worst = rel.max(axis=0)
        worst_all = np.maximum(worst_all, worst)
        failing = [names[k] for k in np.where(worst > TOLERANCE)[0]]
        report["sets"][name] = {"images": len(files[name]), "max_relative_difference": float(worst.max()),
                                "median_over_features": float(np.median(worst)),
                                "features_over_tolerance": failing}
        print(f"{name}: max rel diff {worst.max():.2e}; over {TOLERANCE}: {failing}", flush=True)
        for k, feature in enumerate(names):
            rows.append((name, feature, f"{worst[k]:.3e}", f"{np.abs(refs[name][:, k]).max():.6g}"))
    with open(args.out / "per_feature.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("set", "feature", "max_relative_difference", "max_abs_reference"))
        writer.writerows(rows)

    package = frd_lib.frd_from_features(refs["cbis-test"], refs["mcgan-1000"], backend="pyradiomics")
    batched = frd_lib.frd_from_features(ours["cbis-test"], ours["mcgan-1000"], backend="batched")
    report["frd_peer_1000_vs_cbis_test"] = {
        "pyradiomics": package.value, "batched": batched.value,
        "relative_difference": abs(batched.value - package.value) / abs(package.value),
        "features_used": [package.n_features, batched.n_features]}
    print(f"FRD 1000 vs 402: pyradiomics {package.value:.9f}, batched {batched.value:.9f}", flush=True)

    sample = files["cbis-test"][: args.pyradiomics_sample]
    for workers in (1, 2):
        report["speed"][f"pyradiomics cbis-test {workers} process(es)"] = pyradiomics_rate(sample, workers)
        print(report["speed"][f"pyradiomics cbis-test {workers} process(es)"], flush=True)

    if not args.skip_goal:
        peer = image_set("mcgan-3000", args.data, args.scratch)
        frd_lib._CACHE.clear()
        result, wall, cpu = timed(lambda: frd_lib.frd_fast(files["cbis-test"], peer, workers=2, backend="batched"))
        report["goal_frd_3000_vs_402"] = {"frd": result.value, "features": result.n_features,
                                          "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "processes": 2,
                                          "load": load()}
        print(f"goal: FRD 3000 vs 402 = {result.value:.6f} in {wall:.1f}s, {cpu:.1f} CPU-s (load {load()})")
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out / 'summary.json'}, {args.out / 'per_feature.csv'}")


if __name__ == "__main__":
    main()
