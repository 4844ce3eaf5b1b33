"""Classifiers: timm backbones with named classes, training (optionally DP-SGD), checkpoints."""

from oncosynth.classifiers.encoder import ClassifierFeatures
from oncosynth.classifiers.model import Classifier, create_classifier, load_classifier, save_classifier
from oncosynth.classifiers.train import DPConfig, TrainConfig, TrainResult, predict_proba, train_classifier

__all__ = ["ClassifierFeatures", "Classifier", "create_classifier", "load_classifier", "save_classifier",
           "DPConfig", "TrainConfig", "TrainResult", "predict_proba", "train_classifier"]
