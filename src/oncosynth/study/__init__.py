"""The augmentation-utility study: does synthetic data help a classifier, and by how much?

The data flow, one module each: ``config`` (the YAML) -> ``inputs`` (``prepare``: load and
check every input) -> ``synthetic`` (the synthetic images of a cell) -> ``cells`` (train and
evaluate one cell) -> ``aggregate`` (cells -> result rows, with ``stats``) -> ``page`` (the
study page, ``report.html``); ``run`` drives them.
"""

from oncosynth.study.cells import plan_cells
from oncosynth.study.config import StudyConfig, load_config, parse_config
from oncosynth.study.inputs import prepare
from oncosynth.study.run import run_study

__all__ = ["StudyConfig", "load_config", "parse_config", "plan_cells", "prepare", "run_study"]
