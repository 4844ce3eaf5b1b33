"""A pretrained backbone as a feature encoder for `oncosynth evaluate --feature-net encoder:PATH`.

`evaluate` reads classifier checkpoints; a self-supervised backbone (`oncosynth pretrain`) is one
without a trained head. This wraps it as a classifier checkpoint (the head stays at its random
initialisation; the encoder features are the backbone's pooled output, which the head never
touches), so a data set without a labelled classifier, such as PCam here, still gets a domain
encoder for FID and precision / recall / density / coverage.

  PYTHONPATH=src .venv/bin/python bench/pretrained_encoder.py bench/out/pretrain/simclr-pcam-train \
      bench/out/metrics/encoder-pcam-simclr

Backbone, channels and input size come from the run's own config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oncosynth.classifiers.model import create_classifier, save_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pretrained", type=Path, help="an `oncosynth pretrain` run folder")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    config = json.loads((args.pretrained / "config.json").read_text())
    model = create_classifier(config["backbone"], in_chans=config["in_chans"], img_size=config["img_size"],
                              pretrained=str(args.pretrained))
    print(save_classifier(model, args.out, config={"note": "pretrained backbone, untrained head: an encoder only"}))


if __name__ == "__main__":
    main()
