"""The style-transfer step of ``oncosynth demo``: a few gated pairs on the phantom (well under a minute on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oncosynth.generators.style_transfer import StyleSettings
from oncosynth.quality.campaign import RetrySchedule, run_style_campaign

DEMO_SCHEDULE = RetrySchedule(content_layers=("conv_3", "conv_4", "conv_5"), steps=(60, 100),
                              content_weights=(1.0, 10.0, 100.0), max_trials=3,
                              baseline=StyleSettings(steps=60))


def demo_style_transfer(out: str | Path, phantom: str | Path, classifier: str | Path, seed: int = 0,
                        accept: int = 4, cutoff: float = 0.5) -> dict[str, Any]:
    """Fit a tiny anomaly detector on the phantom, then run benign-content / malignant-style pairs through
    both gates (the study's real-arm classifier is the gate and the feature network).

    The cut-off is 0.5, not the paper's 0.7: the demo's 6-epoch classifier rarely says anything with
    probability 0.7 (on one run its p(malignant) for results ranged 0.30-0.52).
    """
    from oncosynth.quality.anomaly import AnomalyDetector, fit_anomaly_detector

    out = Path(out)
    detector_dir = out / "anomaly-detector"
    if not (detector_dir / "config.json").is_file():
        fit_anomaly_detector(phantom, detector_dir, widths=(4, 8, 16, 16), epochs=3, batch_size=16, seed=seed,
                             progress=False)
    AnomalyDetector.load(detector_dir)  # fail here, not in a unit, if it is unreadable
    return run_style_campaign(phantom, out / "accepted", "benign", "malignant", accept=accept,
                              anomaly=detector_dir, classifier=classifier, schedule=DEMO_SCHEDULE,
                              max_pairs=2 * accept, pairs_per_unit=2 * accept, seed=seed, cutoff=cutoff,
                              progress=False)
