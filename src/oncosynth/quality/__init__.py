"""Quality gates: the anomaly autoencoder and the classifier gate. The style-transfer campaign that uses
them is in ``quality.campaign``, the one-factor sweep in ``quality.sweep``."""

from oncosynth.quality.anomaly import AnomalyDetector, UNetAutoencoder, fit_anomaly_detector, load_anomaly_detector
from oncosynth.quality.gates import AnomalyGate, ClassifierGate

__all__ = ["AnomalyDetector", "UNetAutoencoder", "fit_anomaly_detector", "load_anomaly_detector",
           "AnomalyGate", "ClassifierGate"]
