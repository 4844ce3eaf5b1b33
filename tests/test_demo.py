"""The demo pipeline end to end at a tiny size, and its resume on a re-run."""

from __future__ import annotations

import json

from oncosynth.demo import generators as demo_generators
from oncosynth.demo import pipeline as demo
from oncosynth.demo import study as demo_study
from oncosynth.demo import style_transfer as demo_style
from oncosynth.demo.lanes import Lanes
from oncosynth.generators.style_transfer import StyleSettings
from oncosynth.quality.campaign import RetrySchedule


def test_demo_runs_every_step_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_PHANTOM", dict(n=120, malignant_fraction=0.5, size=32, difficulty="easy"))
    monkeypatch.setattr(demo, "DEMO_GAN_STEPS", 20)
    monkeypatch.setattr(demo_study, "DEMO_STUDY_SIZE", 32)
    monkeypatch.setattr(demo_study, "DEMO_STUDY_EPOCHS", 2)
    monkeypatch.setattr(demo, "DEMO_SYNTHETIC_PER_CLASS", 8)
    monkeypatch.setattr(demo_generators, "DEMO_SINGAN", {**demo_generators.DEMO_SINGAN, "iters": 4, "filters": 8})
    monkeypatch.setattr(demo_generators, "DEMO_DDPM_STEPS", 4)
    # a few optimiser steps per style-transfer trial (60-100 in the demo): both gates still judge each trial
    monkeypatch.setattr(demo_style, "DEMO_SCHEDULE", RetrySchedule(
        content_layers=demo_style.DEMO_SCHEDULE.content_layers, steps=(2, 3),
        content_weights=demo_style.DEMO_SCHEDULE.content_weights, max_trials=3, baseline=StyleSettings(steps=2)))
    # first as on a shared machine: SinGAN, the DDPM and the real-only cells in a second process
    monkeypatch.setattr(demo, "plan_lanes", lambda: Lanes(2, 1))
    out = demo.run_demo(tmp_path / "demo", seed=0)

    summary = json.loads((out / "phantom-summary.json").read_text())
    assert summary["leakage"] == [] and sum(sum(c.values()) for c in summary["splits"].values()) == 120
    assert (out / "gan" / "weights.safetensors").is_file()
    assert len(list((out / "synthetic").glob("*.png"))) == 16
    results = json.loads((out / "study" / "results.json").read_text())
    assert {row["arm"] for row in results["summary"]} == {"real", "real+synthetic"} and len(results["cells"]) == 4
    assert (out / "study" / "report.html").stat().st_size > 10_000
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["results"]["overall"]["n_synthetic"] == 16
    assert (out / "evaluation" / "evaluation.html").is_file()
    assert len(list((out / "singan" / "samples").glob("singan-*_malignant.png"))) == 16
    assert (out / "singan" / "samples-grid.png").is_file() and (out / "singan" / "run" / "config.json").is_file()
    ddpm = json.loads((out / "ddpm" / "samples" / "manifest.json").read_text())
    assert len(ddpm["images"]) == 32 and ddpm["memorisation_guard"][0]["space"] == "pixels"
    assert (out / "ddpm" / "run" / "samples" / "step-0000004.png").is_file()
    style = json.loads((out / "style-transfer" / "accepted" / "manifest.json").read_text())
    assert style["summary"]["trials"] >= style["summary"]["pairs"] > 0 and style["config"]["gates"] == ["anomaly", "classifier"]

    monkeypatch.setattr(demo, "plan_lanes", lambda: Lanes(1, 1))  # as on an idle machine: everything here
    demo.run_demo(tmp_path / "demo", seed=0)  # a re-run reuses every finished step
    assert len(list((out / "synthetic").glob("*.png"))) == 16
    assert json.loads((out / "study" / "results.json").read_text())["cells"] == results["cells"]
