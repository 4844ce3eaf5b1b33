"""``oncosynth demo``, every step in one place.

``pipeline`` runs the steps in order under one folder: the phantom, its summary, the generator
steps (``generators``: a small conditional GAN, one SinGAN), the utility study (``study``), the
evaluation, and gated style transfer (``style_transfer``). ``lanes`` moves the steps that need
nothing from the others into a second process where this one leaves cores idle (a shared machine).
"""

from oncosynth.demo.pipeline import run_demo

__all__ = ["run_demo"]
