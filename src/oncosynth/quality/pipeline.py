"""Old import path of the style-transfer campaign and sweep (kept for one release).

Use :mod:`oncosynth.quality.campaign` and :mod:`oncosynth.quality.sweep`.
"""

from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer
from oncosynth.quality.campaign import (CSV_COLUMNS, TRIALS_DIR, RetrySchedule, _pairs, image_file,
                                        run_style_campaign, run_style_unit)
from oncosynth.quality.sweep import SWEEP_DEFAULTS, run_style_sweep

__all__ = ["CSV_COLUMNS", "TRIALS_DIR", "RetrySchedule", "StyleSettings", "StyleTransfer", "SWEEP_DEFAULTS",
           "_pairs", "image_file", "run_style_campaign", "run_style_sweep", "run_style_unit"]
