"""``python -m oncosynth.cli`` (and ``torchrun ... -m oncosynth.cli``)."""

from oncosynth.cli import main

main()
