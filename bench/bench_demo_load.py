"""Speed under load (issue 16), the whole demo: `oncosynth demo` alone and beside one busy process.

Runs `python -m oncosynth.cli demo` in pairs (alone, then with a pure-Python busy loop started 1 s
before it), each into a fresh folder, and records the demo's own wall time, each step's time as the
demo prints it, and the CPU time of the demo and every process it started. Needs a quiet machine:
anything else running changes both sides of the ratio.

    PYTHONPATH=src .venv/bin/python bench/bench_demo_load.py --pairs 2 --json bench/results/demo-load-lanes.json
    # the same demo from another source tree (e.g. a worktree of an older commit), for drift checks:
    ... bench/bench_demo_load.py --src /tmp/old/src --pairs 1 --label old ...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP_LINE = re.compile(r"^(?P<what>.+?): (?P<path>\S+) \((?P<seconds>\d+) s\)\s*$")
FINISHED = re.compile(r"demo finished in (\d+) s")


def run_demo(src: Path, busy: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "400"}  # rich would wrap the step lines at 80
    for knob in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # the demo chooses, as for a user
        env.pop(knob, None)
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if loop is not None:
            time.sleep(1)
        with tempfile.TemporaryDirectory() as folder:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "oncosynth.cli", "demo", "--out", f"{folder}/demo"],
                                  env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()
    if done.returncode != 0:
        raise SystemExit(f"the demo failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    lines = done.stdout.splitlines()
    finished = next((int(m.group(1)) for m in map(FINISHED.search, lines) if m), None)
    steps = [(m.group("what"), int(m.group("seconds"))) for m in map(STEP_LINE.match, lines) if m]
    return {"demo_seconds": finished, "process_wall_s": round(wall, 1),
            "user_cpu_s": round(after.ru_utime - before.ru_utime, 1),
            "system_cpu_s": round(after.ru_stime - before.ru_stime, 1),
            "load_average_at_start": os.getloadavg()[0], "steps_seconds": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--json", type=Path, required=True, help="results file (pairs are appended to it)")
    args = parser.parse_args()
    record = json.loads(args.json.read_text()) if args.json.is_file() else {
        "machine": "2-core VM (Intel Xeon 2.6 GHz, 24 GiB)", "command": " ".join(sys.argv), "pairs": []}
    print(f"{'label':12s} {'pair':>4s} {'alone s':>8s} {'busy s':>8s} {'ratio':>6s}")
    for index in range(args.pairs):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        alone = run_demo(args.src, busy=False)
        beside = run_demo(args.src, busy=True)
        ratio = beside["demo_seconds"] / alone["demo_seconds"]
        record["pairs"].append({"label": args.label, "src": str(args.src), "started_utc": when,
                                "alone": alone, "beside_busy": beside, "ratio_busy_over_alone": round(ratio, 3)})
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{args.label:12s} {index + 1:4d} {alone['demo_seconds']:8d} {beside['demo_seconds']:8d} {ratio:6.2f}",
              flush=True)


if __name__ == "__main__":
    main()
