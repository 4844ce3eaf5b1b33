"""Class signal: a real-trained classifier's AUROC on synthetic images against the class they were made for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oncosynth.classifiers.model import Classifier, save_classifier
from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.metrics.class_signal import class_signal
from oncosynth.metrics.evaluate import evaluate


class _MeanBrightness(nn.Module):
    num_features = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)


def brightness_classifier(img_size: int = 16) -> Classifier:
    """A "malignant" score that rises with mean brightness, so the expected AUROC is known exactly."""
    model = Classifier("resnet10t", in_chans=1, num_classes=2, img_size=img_size, classes=["benign", "malignant"])
    model.backbone = _MeanBrightness()
    model.head = nn.Linear(1, 2)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[-4.0], [4.0]]))
        model.head.bias.zero_()
    return model


def _images(levels: list[float], size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    noise = 0.02 * torch.rand(len(levels), 1, size, size, generator=g)
    return (torch.tensor(levels).view(-1, 1, 1, 1) + noise).clamp(0, 1)


def test_separated_classes_score_one_and_identical_classes_one_half():
    model = brightness_classifier()
    dark, bright = [0.2, 0.25, 0.3, 0.35], [0.6, 0.65, 0.7, 0.75]
    separated = class_signal(model, _images(dark + bright), ["benign"] * 4 + ["malignant"] * 4)
    assert separated["auroc"] == 1.0 and separated["accuracy"] == 1.0 and separated["positive_class"] == "malignant"
    assert separated["mean_positive_probability"]["malignant"] > separated["mean_positive_probability"]["benign"]
    # the same images under both labels: the generator drew both classes from one distribution
    same = _images(dark + bright)
    alike = class_signal(model, torch.cat([same, same]), ["benign"] * 8 + ["malignant"] * 8)
    assert alike["auroc"] == pytest.approx(0.5)
    swapped = class_signal(model, _images(dark + bright), ["malignant"] * 4 + ["benign"] * 4)
    assert swapped["auroc"] == 0.0  # scored against the labels, not against brightness alone
    assert separated["classifier_size"] == 16  # 32 px images were resized to the classifier's input


def test_bad_labels_are_clear_errors():
    model = brightness_classifier()
    with pytest.raises(ConfigError, match=r"class\(es\) \['normal'\].*knows \['benign', 'malignant'\]"):
        class_signal(model, _images([0.1, 0.9]), ["benign", "normal"])
    with pytest.raises(ConfigError, match="all of class 'benign'"):
        class_signal(model, _images([0.1, 0.9]), ["benign", "benign"])
    with pytest.raises(ConfigError, match="label-from-name"):
        class_signal(model, _images([0.1, 0.9]), ["", ""])


def test_evaluate_reports_the_synthetic_and_the_real_class_signal(tmp_path):
    from typer.testing import CliRunner

    from oncosynth.cli import app
    from test_metrics_evaluate import _write_folder

    levels = [0.2, 0.25, 0.3, 0.35, 0.6, 0.65, 0.7, 0.75]
    real = _write_folder(tmp_path / "real", _images(levels), ["benign"] * 4 + ["malignant"] * 4)
    # a generator whose classes overlap: half of each class from the other's brightness
    synth = _write_folder(tmp_path / "synth", _images(levels), ["benign", "benign", "malignant", "malignant"] * 2)
    model = brightness_classifier()
    metrics = evaluate(real, synth, feature_net="random-cnn:0", compute_frd=False, progress=False,
                       kid_subsets=2, classifier=model, out=tmp_path / "eval")
    signal = metrics["class_signal"]
    assert signal["real"]["auroc"] == 1.0 and signal["synthetic"]["auroc"] == pytest.approx(0.75)  # 12 of 16 pairs
    assert "Class signal" in (tmp_path / "eval" / "evaluation.html").read_text()

    saved = save_classifier(Classifier("resnet10t", in_chans=1, num_classes=2, img_size=16,
                                       classes=["benign", "malignant"]), tmp_path / "clf")
    args = ["evaluate", "--real", str(real), "--synthetic", str(synth), "--no-frd", "--feature-net", "random-cnn:0"]
    result = CliRunner().invoke(app, [*args, "--classifier", str(saved), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "class signal (synthetic): AUROC" in result.output and "class signal (real): AUROC" in result.output
    wrong = CliRunner().invoke(app, [*args, "--classifier", str(tmp_path / "synth"), "--out", str(tmp_path / "bad")])
    assert isinstance(wrong.exception, CheckpointError) and "synth: not a checkpoint" in str(wrong.exception)
    assert not (tmp_path / "bad").exists()  # refused before anything was computed or written


def test_evaluate_refuses_unscorable_labels_before_reading_images(tmp_path, monkeypatch):
    import sys

    from test_metrics_evaluate import _write_folder

    real = _write_folder(tmp_path / "real", _images([0.2, 0.7]), ["benign", "malignant"])
    synth = _write_folder(tmp_path / "synth", _images([0.2, 0.7]), ["benign", "normal"])
    monkeypatch.setattr(sys.modules["oncosynth.metrics.evaluate"], "_load", lambda *a, **k: pytest.fail("images were read"))
    with pytest.raises(ConfigError, match=r"\['normal'\]"):
        evaluate(real, synth, feature_net="random-cnn:0", compute_frd=False, progress=False,
                 classifier=brightness_classifier(), out=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
