"""oncosynth: synthetic data augmentation for cancer imaging."""

__version__ = "0.1.0"
