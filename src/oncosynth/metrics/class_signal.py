"""Class signal of a conditional generator: does a classifier trained on real images tell its classes apart?

A conditional generator can match the real images' overall look and still draw its "malignant" and
"benign" samples from nearly the same distribution; such images carry little label information and
act as label noise when a classifier trains on them. Fidelity metrics (FID, precision/recall) do
not see this. Here a classifier trained on real images only scores each synthetic image, and the
AUROC of its score against the class the image was generated for measures how much of the real
class difference the generator reproduced ("GAN-test", Shmelkov et al., ECCV 2018). The same
classifier on a real labelled set gives the scale: a generator whose classes separate as well as the
real ones scores about the same AUROC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncosynth.data.records import positive_index
from oncosynth.data.transforms import convert_images
from oncosynth.errors import ConfigError


def load_scoring_classifier(classifier: Any, device: torch.device | str = "cpu"):
    """A trained classifier folder (``train-classifier`` output, a study cell's ``model/``) or a built one."""
    from oncosynth.classifiers.model import Classifier, load_classifier

    if isinstance(classifier, Classifier):
        return classifier.to(device).eval()
    return load_classifier(Path(classifier), device=device)


def check_labels(model, labels: list[str], what: str = "synthetic") -> tuple[list[str], list[str]]:
    """(the classifier's classes, the classes present); an error naming the problem if they cannot be scored."""
    classes = list(model.config.get("classes") or [])
    if not classes:
        raise ConfigError("the classifier records no class names, so its outputs cannot be matched to labels")
    present = sorted(set(labels))
    unknown = [c for c in present if c not in classes]
    if unknown or not present:
        raise ConfigError(f"the {what} images have class(es) {unknown or ['<none>']} that the classifier was not "
                          f"trained on (it knows {classes}); give labelled images (--label-from-name for file "
                          "names ending in _<class>)")
    if len(present) < 2:
        raise ConfigError(f"the {what} images are all of class '{present[0]}': a class signal needs two classes")
    return classes, present


def class_signal(classifier: Any, images: torch.Tensor, labels: list[str], device: torch.device | str = "cpu",
                 what: str = "synthetic") -> dict[str, Any]:
    """Score ``images`` (N×C×H×W in [0, 1], any size) with ``classifier`` against their class names.

    Returns the positive class, AUROC of the positive class's probability (macro one-vs-rest for
    more than two classes), accuracy of the arg-max, and the mean positive probability per class.
    Classes the classifier was not trained on are an error naming them.
    """
    from oncosynth.classifiers.scores import auroc, macro_auroc
    from oncosynth.classifiers.train import predict_proba

    model = load_scoring_classifier(classifier, device)
    classes, present = check_labels(model, labels, what)
    size, channels = int(model.config.get("img_size") or images.shape[-1]), int(model.config["in_chans"])
    inputs = convert_images(images, size, channels)
    probs = predict_proba(model, inputs, device=device)
    y = np.array([classes.index(label) for label in labels])
    positive = positive_index(classes)
    if len(classes) > 2:
        score = macro_auroc(y, probs)[0]
    else:
        score = auroc((y == positive).astype(np.int64), probs[:, positive])
    return {
        "n": int(len(labels)),
        "positive_class": classes[positive],
        "auroc": float(score),
        "accuracy": float((probs.argmax(axis=1) == y).mean()),
        "mean_positive_probability": {c: float(probs[y == classes.index(c), positive].mean()) for c in present},
        "classifier_size": size,
    }
