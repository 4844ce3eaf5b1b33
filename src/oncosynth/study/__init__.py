"""The augmentation-utility study: does synthetic data help a classifier, and by how much?"""

from oncosynth.study.config import StudyConfig, load_config, parse_config
from oncosynth.study.demo import demo_study
from oncosynth.study.run import plan_cells, prepare, run_study

__all__ = ["StudyConfig", "load_config", "parse_config", "demo_study", "plan_cells", "prepare", "run_study"]
