"""What a style-transfer campaign would have accepted under other gate settings, from its manifest.

Trial t of pair j has the same settings in every campaign with the same seed and schedule, and a
trial's result does not depend on the gates, so a campaign with looser gates runs exactly the same
trials up to each pair's first trial that passes them (up to float reduction order: a pair's batch
companions differ). From a run that recorded every trial (gates at their strictest), this replays
looser cut-offs and anomaly thresholds without any new optimisation.

    python bench/bench_style_replay.py bench/out/style/campaign --anomaly bench/out/style/anomaly-cpu
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def replay(trials: list[dict], cutoff: float, threshold: float) -> dict:
    by_pair = defaultdict(list)
    for t in trials:
        by_pair[t["pair"]].append(t)
    accepted = run = 0
    cpu = 0.0
    complete = 0
    max_trials = max(t["trial"] for t in trials)
    for pair, rows in by_pair.items():
        rows.sort(key=lambda r: r["trial"])
        passed = False
        for r in rows:
            run += 1
            cpu += r["cpu_seconds"]
            if r["classifier_prob"] >= cutoff and r["anomaly_score"] <= threshold:
                accepted += 1
                passed = True
                break
        complete += passed or len(rows) == max_trials
    return {"cutoff": cutoff, "threshold": threshold, "pairs": len(by_pair), "pairs_complete": complete,
            "accepted": accepted, "acceptance_rate": accepted / len(by_pair), "trials": run,
            "trials_per_accepted": run / accepted if accepted else None,
            "cpu_seconds_per_accepted": cpu / accepted if accepted else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("campaign")
    parser.add_argument("--anomaly", required=True, help="the detector, for its validation scores")
    args = parser.parse_args()
    manifest = json.loads((Path(args.campaign) / "manifest.json").read_text())
    trials = manifest["trials"]
    val = np.array(json.loads((Path(args.anomaly) / "manifest.json").read_text())["val_scores"])
    rows = []
    for pct in (95, 99, 100):
        threshold = float(np.percentile(val, pct))
        for cutoff in (0.7, 0.6, 0.5):
            rows.append({"anomaly_percentile": pct, **replay(trials, cutoff, threshold)})
    print("| anomaly threshold (percentile of real val) | cut-off | pairs | accepted | acceptance | trials | "
          "trials / accepted | CPU s / accepted |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        tpa = f"{r['trials_per_accepted']:.1f}" if r["trials_per_accepted"] else "-"
        cpa = f"{r['cpu_seconds_per_accepted']:.0f}" if r["cpu_seconds_per_accepted"] else "-"
        print(f"| {r['threshold']:.4f} ({r['anomaly_percentile']}th) | {r['cutoff']} | {r['pairs']} | {r['accepted']} | "
              f"{r['acceptance_rate']:.0%} | {r['trials']} | {tpa} | {cpa} |")


if __name__ == "__main__":
    main()
