"""Quality gates and the retry pipeline: the anomaly autoencoder, the classifier gate, style-transfer campaigns."""

from oncosynth.quality.anomaly import AnomalyDetector, UNetAutoencoder, fit_anomaly_detector, load_anomaly_detector
from oncosynth.quality.gates import AnomalyGate, ClassifierGate

__all__ = ["AnomalyDetector", "UNetAutoencoder", "fit_anomaly_detector", "load_anomaly_detector",
           "AnomalyGate", "ClassifierGate"]
