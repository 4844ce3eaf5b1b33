"""Data layer: records, loaders per source format, splits, fractions, cache.

Images enter the library as float tensors N×C×H×W in [0, 1].
"""

from oncosynth.data.records import Dataset, Record, class_order, positive_index
from oncosynth.data.loaders import as_dataset, detect_format, load_dataset
from oncosynth.data.decode import load_images, read_image
from oncosynth.data.splits import check_leakage, make_splits, sample_fraction
from oncosynth.data.cache import cached_tensors

__all__ = [
    "Dataset", "Record", "as_dataset", "class_order", "detect_format", "positive_index", "load_dataset", "load_images", "read_image",
    "check_leakage", "make_splits", "sample_fraction", "cached_tensors",
]
