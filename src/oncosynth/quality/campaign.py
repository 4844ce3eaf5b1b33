"""The style-transfer campaign (the sweep is in :mod:`oncosynth.quality.sweep`): random pairs, a retry schedule, two gates, a manifest of every trial.

1. Pairs (content image of ``content_class``, style image of ``style_class``) are
   drawn at random from one split; pair ``j`` depends only on ``(seed, j)``, so a
   re-run draws the same pairs. With a classifier gate, only content images that
   the classifier calls ``content_class`` are drawn (the gate's content condition,
   checked once up front instead of wasting trials).
2. Trial 1 of every pair uses the paper's baseline (content at conv_5, 250
   steps, content weight 1, style weight 100,000). A rejected pair is retried with
   other settings from the schedule's grid (content layer × steps × content
   weight; a seeded per-pair order without repeats), at most ``max_trials`` times.
3. Each result goes through the anomaly gate (score <= threshold) and the
   classifier gate (p(style class) >= cut-off). Every trial is recorded (pair,
   settings, losses, anomaly score, classifier probability, accepted or why not).

Work is split into units of ``pairs_per_unit`` pairs, run through the executor
seam (:mod:`oncosynth.parallel.executor`). A unit optimises its pending pairs together
(one batch per round of trials, each pair with its own settings), writes each
accepted image atomically as soon as it is accepted and its trial records to
``<out>/.trials/<unit>.json`` after every round. A re-run (after a kill) skips
finished pairs and continues unfinished ones at their next trial; accepted
images are never redone (a damaged trial file is set aside: its pairs start again). Units are launched in waves until ``accept`` images
are accepted or the pairs run out; ``manifest.json``/``manifest.csv`` are
rewritten after every wave.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncosynth.errors import ConfigError
from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer
from oncosynth.io import check_output_folder, save_image, set_aside, write_json, write_text
from oncosynth.runtime.run_threads import pinned_count

TRIALS_DIR = ".trials"
CSV_COLUMNS = ["pair", "trial", "content", "style", "content_layer", "steps", "content_weight", "style_weight",
               "anomaly_score", "anomaly_threshold", "classifier_prob", "content_prob", "accepted", "reason",
               "file", "total_loss", "cpu_seconds", "unit"]


@dataclass(frozen=True)
class RetrySchedule:
    """Trial 1: ``baseline``; later trials: the grid content_layers × steps × content_weights in a seeded
    per-pair order (the baseline's combination left out). Defaults: the paper's ranges."""

    content_layers: tuple[str, ...] = ("conv_1", "conv_2", "conv_3", "conv_4", "conv_5")
    steps: tuple[int, ...] = (150, 250, 500, 1000)
    content_weights: tuple[float, ...] = (0.1, 1.0, 10.0, 50.0, 100.0, 200.0)
    max_trials: int = 7
    baseline: StyleSettings = field(default_factory=StyleSettings)

    def __post_init__(self):
        if self.max_trials < 1:
            raise ConfigError(f"max trials must be >= 1, not {self.max_trials}")
        if not (self.content_layers and self.steps and self.content_weights):
            raise ConfigError("the retry schedule needs at least one content layer, step count and content weight")

    def grid(self) -> list[tuple[str, int, float]]:
        base = (self.baseline.content_layer, self.baseline.steps, self.baseline.content_weight)
        return [c for c in itertools.product(self.content_layers, self.steps, self.content_weights) if c != base]

    def settings(self, pair: int, trial: int, seed: int = 0) -> StyleSettings:
        if trial < 1 or trial > self.max_trials:
            raise ConfigError(f"trial {trial} outside 1..{self.max_trials}")
        if trial == 1:
            return self.baseline
        grid = self.grid()
        order = np.random.default_rng([seed, pair, 1]).permutation(len(grid))
        layer, steps, weight = grid[order[(trial - 2) % len(grid)]]
        return self.baseline.with_(content_layer=layer, steps=int(steps), content_weight=float(weight))

    def layers(self) -> set[str]:
        return set(self.content_layers) | {self.baseline.content_layer} | set(self.baseline.style_layers)

    def to_dict(self) -> dict[str, Any]:
        return {"content_layers": list(self.content_layers), "steps": list(self.steps),
                "content_weights": list(self.content_weights), "max_trials": self.max_trials,
                "baseline": self.baseline.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RetrySchedule":
        base = dict(d["baseline"])
        base["style_layers"] = tuple(base["style_layers"])
        return cls(tuple(d["content_layers"]), tuple(int(s) for s in d["steps"]),
                   tuple(float(w) for w in d["content_weights"]), int(d["max_trials"]), StyleSettings(**base))


# ------------------------------------------------------------------ set-up ----
def _resolve_feature_net(feature_net: str | None, classifier, anomaly) -> str:
    if feature_net:
        return str(feature_net)
    if classifier is not None:
        return f"encoder:{classifier}"
    if anomaly is not None:
        return f"encoder:{anomaly}"
    return "vgg19:download"


def _image_tensors(records, size: int | None, channels: int | None) -> torch.Tensor:
    from oncosynth.data.decode import load_images

    return load_images(records, size=size, channels=channels)


def _pairs(content: list, style: list, count: int, seed: int) -> list[dict[str, Any]]:
    pairs = []
    for j in range(count):
        rng = np.random.default_rng([seed, j, 7])
        c, s = content[int(rng.integers(len(content)))], style[int(rng.integers(len(style)))]
        pairs.append({"pair": j, "content": asdict(c), "style": asdict(s)})
    return pairs


def image_file(pair: int, trial: int, style_class: str) -> str:
    # the class is the last '_' token, so the folder reads back with --label-from-name / the study
    return f"style-transfer-p{pair:06d}-t{trial}_{style_class}.png"


# ------------------------------------------------------------------ units ----
_CONTEXT: dict[tuple, dict[str, Any]] = {}


def _context(job: dict[str, Any]) -> dict[str, Any]:
    """Networks of a unit, cached per process (an in-process executor loads them once)."""
    from oncosynth.quality.gates import AnomalyGate, ClassifierGate

    key = (job["feature_net"], job["anomaly"], job["anomaly_threshold"], job["classifier"], job["cutoff"],
           job["content_class"], job["style_class"], job["device"], job["optimizer"])
    if key not in _CONTEXT:
        _CONTEXT.clear()
        _CONTEXT[key] = {
            "transfer": StyleTransfer(job["feature_net"], optimizer=job["optimizer"], device=job["device"]),
            "anomaly": AnomalyGate(job["anomaly"], job["anomaly_threshold"], device=job["device"])
            if job["anomaly"] else None,
            "classifier": ClassifierGate(job["classifier"], job["content_class"], job["style_class"],
                                         job["cutoff"], device=job["device"]) if job["classifier"] else None,
        }
    return _CONTEXT[key]


_READ_BACK = {"pair", "trial", "accepted", "reason", "file", "cpu_seconds"}  # the fields of a record read again


def _read_state(path: Path) -> dict[str, Any]:
    """A unit's trial records; empty when absent, or damaged (then set aside, renamed and never
    deleted, and the unit's pairs start again: a pair's trials are drawn the same way again)."""
    if path.is_file():
        try:
            state = json.loads(path.read_text())
            _check_state(state)
            return state
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            set_aside(path, f"damaged trial records ({exc}); the unit's pairs start again")
    return {"pairs": {}}


def _check_state(state: Any) -> None:
    """Raise ValueError unless ``state`` has the shape ``run_style_unit`` writes (the fields read back)."""
    if not isinstance(state, dict) or not isinstance(state.get("pairs"), dict):
        raise ValueError("no 'pairs' object")
    for key, entry in state["pairs"].items():
        records = entry.get("records") if isinstance(entry, dict) else None
        if not (isinstance(records, list) and isinstance(entry.get("done"), bool)
                and all(isinstance(r, dict) and _READ_BACK <= set(r) for r in records)):
            raise ValueError(f"pair {key}: not a pair entry with its trial records")


def run_style_unit(job: dict[str, Any]) -> dict[str, Any]:
    """One unit: the pairs in ``job["pairs"]`` through style transfer, gates and retries (module-level:
    any executor can run it). Resumes from its own trial file; returns a small summary."""
    from oncosynth.data.records import Record

    torch.set_num_threads(int(job.get("threads", 1)))
    out = Path(job["out"])
    state_path = out / TRIALS_DIR / f"{job['key']}.json"
    state = _read_state(state_path)
    schedule = RetrySchedule.from_dict(job["schedule"])
    pending = []
    for pair in job["pairs"]:
        entry = state["pairs"].setdefault(str(pair["pair"]), {"records": [], "done": False, "pair": pair})
        if entry["done"] and any(r["accepted"] for r in entry["records"]):
            accepted = [r for r in entry["records"] if r["accepted"]][0]
            if not (out / accepted["file"]).is_file():  # image lost (deleted?): redo that trial
                entry["records"] = [r for r in entry["records"] if r["trial"] < accepted["trial"]]
                entry["done"] = False
        if not entry["done"]:
            pending.append(pair)
    if not pending:
        return _unit_summary(job["key"], state, 0.0)

    ctx = _context(job)
    transfer, anomaly, classifier = ctx["transfer"], ctx["anomaly"], ctx["classifier"]
    content = _image_tensors([Record(**p["content"]) for p in pending], job["size"], job["channels"])
    style = _image_tensors([Record(**p["style"]) for p in pending], job["size"], job["channels"])
    content_prob = classifier.content_ok(content)[1] if classifier else np.full(len(pending), np.nan)
    rows = {p["pair"]: i for i, p in enumerate(pending)}
    cpu_total = 0.0
    while pending:
        cpu0 = time.process_time()
        index = [rows[p["pair"]] for p in pending]
        trials = [len(state["pairs"][str(p["pair"])]["records"]) + 1 for p in pending]
        settings = [schedule.settings(p["pair"], t, job["seed"]) for p, t in zip(pending, trials)]
        result = transfer.run(content[index], style[index], settings)
        scores = anomaly.score(result.images) if anomaly else np.full(len(pending), np.nan)
        probs = classifier.style_probability(result.images) if classifier else np.full(len(pending), np.nan)
        cpu = time.process_time() - cpu0
        cpu_total += cpu
        weight = np.array([s.steps for s in settings], dtype=float)
        still = []
        for k, (pair, trial, s) in enumerate(zip(pending, trials, settings)):
            reasons = []
            if anomaly and not bool(anomaly.accepts(scores[k : k + 1])[0]):
                reasons.append(f"anomaly score {scores[k]:.4g} > threshold {anomaly.threshold:.4g}")
            if classifier and not bool(classifier.accepts(probs[k : k + 1])[0]):
                reasons.append(f"p({job['style_class']}) {probs[k]:.3f} < {classifier.cutoff}")
            accepted = not reasons
            file = image_file(pair["pair"], trial, job["style_class"]) if accepted else ""
            if accepted:
                save_image(result.images[k], out / file)
            entry = state["pairs"][str(pair["pair"])]
            entry["records"].append({
                "pair": pair["pair"], "trial": trial, "content": pair["content"]["source"],
                "style": pair["style"]["source"], "content_layer": s.content_layer, "steps": s.steps,
                "content_weight": s.content_weight, "style_weight": s.style_weight,
                "style_layers": list(s.style_layers), "lr": s.lr, "optimizer": job["optimizer"],
                "steps_taken": int(result.steps[k]), "total_loss": float(result.total_loss[k]),
                "content_loss": float(result.content_loss[k]), "style_loss": float(result.style_loss[k]),
                "anomaly_score": None if not anomaly else float(scores[k]),
                "anomaly_threshold": None if not anomaly else anomaly.threshold,
                "classifier_prob": None if not classifier else float(probs[k]),
                "content_prob": None if not classifier else float(content_prob[rows[pair["pair"]]]),
                "accepted": accepted, "reason": "; ".join(reasons) or "accepted", "file": file,
                "cpu_seconds": float(cpu * weight[k] / weight.sum()), "unit": job["key"]})
            entry["done"] = accepted or trial >= schedule.max_trials
            if not entry["done"]:
                still.append(pair)
        write_json(state_path, state)
        pending = still
    return _unit_summary(job["key"], state, cpu_total)


def _unit_summary(key: str, state: dict[str, Any], cpu: float) -> dict[str, Any]:
    records = [r for e in state["pairs"].values() for r in e["records"]]
    return {"key": key, "pairs": len(state["pairs"]), "trials": len(records),
            "accepted": sum(r["accepted"] for r in records), "cpu_seconds_this_run": cpu}


# ------------------------------------------------------------------ campaign ----
def run_style_campaign(data, out: str | Path, content_class: str = "benign", style_class: str = "malignant",
                       accept: int = 10, anomaly: str | Path | None = None, classifier: str | Path | None = None,
                       feature_net: str | None = None, split: str = "train", size: int | None = None,
                       schedule: RetrySchedule | None = None, max_pairs: int | None = None,
                       pairs_per_unit: int = 16, executor=None, workers: int = 0, seed: int = 0,
                       device: str = "cpu", optimizer: str = "adam", cutoff: float = 0.7,
                       anomaly_threshold: float | None = None, threads: int = 1, units_per_wave: int | None = None,
                       progress: bool = True, data_format: str | None = None) -> dict[str, Any]:
    """Run (or resume) a campaign; returns the summary also written to ``<out>/manifest.json``.

    Units are handed to the executor ``units_per_wave`` at a time (default: its ``workers``, at least
    1); the campaign stops after the first wave that brings the accepted count to ``accept``.
    """
    from oncosynth.data import as_dataset
    from oncosynth.parallel.executor import LocalExecutor, Unit, run_all
    from oncosynth.quality.gates import AnomalyGate, ClassifierGate
    from oncosynth.runtime.devices import resolve_device
    from oncosynth.runtime.manifest import hash_strings, make_manifest

    out = check_output_folder(Path(out), "--out")  # before any work
    schedule = schedule or RetrySchedule()
    if accept < 1:
        raise ConfigError(f"--accept must be >= 1, not {accept}")
    if pairs_per_unit < 1:
        raise ConfigError(f"pairs per unit must be >= 1, not {pairs_per_unit}")
    max_pairs = max_pairs or 10 * accept
    dev = str(resolve_device(device))
    # ---- every check before any work
    dataset = as_dataset(data, format=data_format)
    dataset.class_index(content_class)
    dataset.class_index(style_class)
    if content_class == style_class:
        raise ConfigError(f"content and style class are both '{content_class}'")
    part = dataset.split(split)
    if len(part) == 0:
        raise ConfigError(f"the data set has no '{split}' split; it has {dataset.splits}")
    contents = [r for r in part.records if r.label == content_class]
    styles = [r for r in part.records if r.label == style_class]
    if not contents or not styles:
        raise ConfigError(f"split '{split}' needs images of both '{content_class}' ({len(contents)}) and "
                          f"'{style_class}' ({len(styles)})")
    spec = _resolve_feature_net(feature_net, classifier, anomaly)
    transfer = StyleTransfer(spec, optimizer=optimizer, device=dev)
    transfer.features.check_layers(sorted(schedule.layers()))
    cls_gate = ClassifierGate(classifier, content_class, style_class, cutoff, device=dev) if classifier else None
    an_gate = AnomalyGate(anomaly, anomaly_threshold, device=dev) if anomaly else None
    first = _image_tensors(contents[:1], size, None)
    size = size or int(first.shape[-1])
    if first.shape[-1] != first.shape[-2] and size is None:
        raise ConfigError("content images are not square; pass --size")
    channels = int(first.shape[1])

    eligible = contents
    content_check = None
    if cls_gate is not None:
        ok, _ = cls_gate.content_ok(_image_tensors(contents, size, channels))
        eligible = [r for r, good in zip(contents, ok) if good]
        content_check = {"content_images": len(contents), "called_" + content_class: len(eligible)}
        if not eligible:
            raise ConfigError(f"the classifier calls none of the {len(contents)} '{content_class}' images "
                              f"'{content_class}'; no pair can pass its gate")
    pairs = _pairs(eligible, styles, max_pairs, seed)
    config = {"data": str(getattr(dataset, "root", data)), "split": split, "content_class": content_class,
              "style_class": style_class, "accept": accept, "feature_net": spec,
              "feature_net_name": transfer.features.name, "anomaly": str(anomaly) if anomaly else None,
              "anomaly_threshold": an_gate.threshold if an_gate else None,
              "classifier": str(classifier) if classifier else None, "cutoff": cutoff if cls_gate else None,
              "schedule": schedule.to_dict(), "optimizer": optimizer, "size": size, "channels": channels,
              "max_pairs": max_pairs, "pairs_per_unit": pairs_per_unit, "seed": seed, "device": dev,
              "content_check": content_check,
              "gates": [g for g, on in (("anomaly", an_gate), ("classifier", cls_gate)) if on]}
    _check_same_settings(out, config)
    out.mkdir(parents=True, exist_ok=True)
    threads = config["threads"] = pinned_count(out, threads)  # a resumed campaign keeps its first count
    if not config["gates"] and progress:
        print("warning: no --anomaly and no --classifier: every result is accepted unchecked", flush=True)
    job_base = {"out": str(out), "feature_net": spec, "anomaly": str(anomaly) if anomaly else None,
                "anomaly_threshold": anomaly_threshold, "classifier": str(classifier) if classifier else None,
                "cutoff": cutoff, "content_class": content_class, "style_class": style_class, "device": dev,
                "optimizer": optimizer, "schedule": schedule.to_dict(), "seed": seed, "size": size,
                "channels": channels, "threads": threads}
    units = [Unit(f"pairs-{k:05d}", run_style_unit,
                  args=({**job_base, "key": f"pairs-{k:05d}", "pairs": pairs[start : start + pairs_per_unit]},))
             for k, start in enumerate(range(0, len(pairs), pairs_per_unit))]
    del transfer, cls_gate, an_gate
    executor = executor or LocalExecutor(workers=workers)
    wave = units_per_wave or max(1, int(getattr(executor, "workers", 1) or 1))
    started, errors = time.perf_counter(), []
    manifest = make_manifest("synthetic/style-transfer", config, seed=seed,
                             data_hash=hash_strings(r.uid for r in part.records))
    summary = _write_manifest(out, manifest, errors, time.perf_counter() - started)
    position = 0
    while position < len(units) and summary["accepted"] < accept:
        batch = units[position : position + wave]
        position += len(batch)
        for outcome in run_all(batch, executor):
            if not outcome.ok:
                errors.append({"unit": outcome.key, "error": outcome.error})
        summary = _write_manifest(out, manifest, errors, time.perf_counter() - started)
        if progress:
            print(f"style transfer: {summary['pairs']} pairs, {summary['trials']} trials, "
                  f"{summary['accepted']}/{accept} accepted", flush=True)
    return summary


# Settings a resumed campaign may change: how many images it wants and may try, and where it runs
# (its thread count is pinned to the first run's: oncosynth.runtime.run_threads).
RESUMABLE = ("accept", "max_pairs", "device", "threads")


def _check_same_settings(out: Path, config: dict[str, Any]) -> None:
    """A campaign resumed in ``out`` must keep the settings that made its trial records; otherwise
    its new trials would mix with the old under one manifest."""
    path = out / "manifest.json"
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text()).get("config")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return  # rewritten from the trial records at the end of this run
    if not isinstance(before, dict):
        return
    now = json.loads(json.dumps(config, default=str))  # compare as stored (tuples become lists)
    changed = sorted(k for k in set(before) | set(now) if k not in RESUMABLE and before.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{path}: this folder holds a campaign made with other settings ({', '.join(changed)}); "
                          f"use another --out, or the same settings to resume it")


def _all_records(out: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((out / TRIALS_DIR).glob("*.json")):
        state = _read_state(path)
        records += [r for e in state["pairs"].values() for r in e["records"]]
    return sorted(records, key=lambda r: (r["pair"], r["trial"]))


def _write_manifest(out: Path, manifest: dict[str, Any], errors: list, seconds: float) -> dict[str, Any]:
    records = _all_records(out)
    pairs = {r["pair"] for r in records}
    accepted = [r for r in records if r["accepted"]]
    cpu = sum(r["cpu_seconds"] for r in records)
    summary = {"pairs": len(pairs), "trials": len(records), "accepted": len(accepted),
               "acceptance_rate": len(accepted) / len(pairs) if pairs else None,
               "trials_per_accepted": len(records) / len(accepted) if accepted else None,
               "cpu_seconds": cpu, "cpu_seconds_per_accepted": cpu / len(accepted) if accepted else None,
               "rejected_by": _rejections(records), "wall_seconds_this_run": seconds, "unit_errors": errors}
    write_json(out / "manifest.json", {**manifest, "summary": summary,
                                       "images": [r["file"] for r in accepted], "trials": records})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    write_text(out / "manifest.csv", buffer.getvalue())
    return summary


def _rejections(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"anomaly_only": 0, "classifier_only": 0, "both": 0}
    for r in records:
        if r["accepted"]:
            continue
        a, c = "anomaly score" in r["reason"], "p(" in r["reason"]
        counts["both" if a and c else "anomaly_only" if a else "classifier_only"] += 1
    return counts
