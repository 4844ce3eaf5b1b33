"""Style transfer with its two quality gates, as one generator a study can train per cell.

The gated pipeline of ``oncosynth style-transfer`` (``oncosynth.quality``) needs an anomaly detector
and a classifier trained beforehand on real data. A study that trains its generators inside each
cell must not borrow those from all the data, so this generator trains both itself, on exactly
the images it is fitted on:

* ``fit``: keeps the images (the pool style transfer draws from, as ``style-transfer`` does),
  trains the U-Net autoencoder on a seeded 85 % of them and sets its threshold at
  ``anomaly_percentile`` of the other 15 %'s scores, and trains the gate classifier on the same
  85 % (selected on the 15 %). All three live in the one checkpoint.
* ``sample(n, style_class)``: draws (content, style) pairs, keeps only content images the gate
  classifier calls the content class, and runs each pair through up to ``max_trials`` settings of
  the paper's retry schedule (``RetrySchedule``: baseline first, then other content layers, steps
  and content weights) until a result passes both gates: anomaly score at most the threshold and
  style-class probability at least ``cutoff``. It returns the first ``n`` accepted results in pair
  order, and stops with an error naming the shortfall after ``max_pairs_per_image × n`` pairs.

Unlike the ungated generator, image ``i`` depends on ``seed`` and on how many earlier pairs were
rejected, not on ``seed + i`` alone; the same ``(n, seed)`` always gives the same images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from oncosynth.errors import ConfigError
from oncosynth.generators.base import Generator
from oncosynth.generators.registry import register_generator
from oncosynth.generators.style_transfer import StyleTransferGenerator


@register_generator("nst-gated")
class GatedStyleTransferGenerator(StyleTransferGenerator):
    name = "style-transfer-gated"
    defaults = {**StyleTransferGenerator.defaults,
                "cutoff": 0.7, "max_trials": 7, "max_pairs_per_image": 10,
                "retry_content_layers": ["conv_1", "conv_2", "conv_3", "conv_4", "conv_5"],
                "retry_steps": [150, 250, 500, 1000], "retry_content_weights": [0.1, 1.0, 10.0, 50.0, 100.0, 200.0],
                "anomaly_widths": [8, 16, 32, 64, 64], "anomaly_epochs": 10, "anomaly_percentile": 95.0,
                "anomaly_threshold": None,  # set by fit
                "gate_backbone": "resnet10t", "gate_steps": 300, "gate_batch_size": 32, "gate_lr": 1e-3}

    def build(self) -> None:
        from oncosynth.classifiers.model import create_classifier
        from oncosynth.quality.anomaly import UNetAutoencoder

        super().build()
        self.autoencoder = UNetAutoencoder(self.channels, tuple(int(w) for w in self.config["anomaly_widths"]))
        self.gate = create_classifier(self.config["gate_backbone"], in_chans=self.channels,
                                      num_classes=len(self.classes), img_size=self.size, classes=self.classes)

    def networks(self) -> dict[str, nn.Module]:
        return {"pool": self.pool, "autoencoder": self.autoencoder, "gate": self.gate}

    def load_state_tensors(self, tensors, where: str = "checkpoint") -> None:
        super().load_state_tensors(tensors, where)  # gives the pool its saved shape
        Generator.load_state_tensors(self, tensors, where)  # then every network, strictly

    def schedule(self):
        from oncosynth.quality.campaign import RetrySchedule

        c = self.config
        return RetrySchedule(tuple(c["retry_content_layers"]), tuple(int(s) for s in c["retry_steps"]),
                             tuple(float(w) for w in c["retry_content_weights"]), int(c["max_trials"]),
                             self.settings())

    # ------------------------------------------------------------ fit: pool, then the two gates
    def fit(self, data, run_folder, steps: int = 0, classes: list[str] | None = None, seed: int = 0,
            device: str = "cpu", allow_leakage: bool = False, **options) -> "GatedStyleTransferGenerator":
        from oncosynth.classifiers.train import TrainConfig, train_classifier
        from oncosynth.quality.anomaly import AnomalyDetector, held_out_split, train_autoencoder

        if not 0 < float(self.config["cutoff"]) <= 1:
            raise ConfigError(f"{self.name}: cutoff must be in (0, 1], not {self.config['cutoff']}")
        with torch.random.fork_rng():  # the gate classifier is built inside fit: seed its initial weights
            torch.manual_seed(seed)
            super().fit(data, run_folder, steps, classes, seed, device, allow_leakage, **options)
        self.transfer().features.check_layers(sorted(self.schedule().layers()))  # before the gates train
        images, labels = self.pool.images, self.pool.labels
        held, kept = (torch.from_numpy(i) for i in held_out_split(len(images), seed))  # as fit-anomaly holds out
        if len(kept) < 2:
            raise ConfigError(f"{self.name}: {len(images)} images are too few to train the gates")
        model, _ = train_autoencoder(images[kept], self.size, self.channels,
                                     tuple(int(w) for w in self.config["anomaly_widths"]),
                                     int(self.config["anomaly_epochs"]), seed=seed, device=self.device)
        detector = AnomalyDetector(model, self.size, percentile=float(self.config["anomaly_percentile"]))
        self.config["anomaly_threshold"] = detector.calibrate(images[held])
        self.autoencoder.load_state_dict(model.state_dict())
        c = self.config
        train_classifier(self.gate, (images[kept], labels[kept]), (images[held], labels[held]),
                         TrainConfig(steps=int(c["gate_steps"]), batch_size=int(c["gate_batch_size"]),
                                     lr=float(c["gate_lr"])),
                         seed=seed, device=self.device, positive=len(self.classes) - 1)
        self.manifest = {**self.manifest, "gates": {"anomaly_threshold": c["anomaly_threshold"],
                                                    "fit_images": len(kept), "held_out_images": len(held)}}
        self.save(run_folder)
        return self

    # ------------------------------------------------------------ sample: pairs through trials and gates
    @torch.no_grad()
    def sample(self, n: int, class_name: str, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
        from oncosynth.quality.anomaly import AnomalyDetector
        from oncosynth.quality.gates import AnomalyGate, ClassifierGate

        style_label = self.class_index(class_name)
        content_name = self.config.get("content_class") or next(c for c in self.classes if c != class_name)
        content_label = self.class_index(content_name)
        anomaly = AnomalyGate(AnomalyDetector(self.autoencoder, self.size, self.config["anomaly_threshold"]))
        classifier = ClassifierGate(self.gate, content_name, class_name, float(self.config["cutoff"]),
                                    device=self.device)
        if n <= 0:
            return torch.zeros(0, self.channels, self.size, self.size)
        contents = torch.nonzero(self.pool.labels == content_label).flatten()
        called, _ = classifier.content_ok(self.pool.images[contents])
        contents = contents[torch.from_numpy(np.asarray(called, dtype=bool))]
        styles = torch.nonzero(self.pool.labels == style_label).flatten()
        if len(contents) == 0 or len(styles) == 0:
            raise ConfigError(f"{self.name}: no '{content_name}' image the gate classifier calls "
                              f"'{content_name}', or no '{class_name}' image: no pair can pass")
        schedule, budget = self.schedule(), int(self.config["max_pairs_per_image"]) * n
        accepted: dict[int, torch.Tensor] = {}
        pair = 0
        while len(accepted) < n and pair < budget:
            # twice the missing images per wave: most pairs pass within a few trials
            wave = list(range(pair, pair + min(batch_size, 2 * (n - len(accepted)), budget - pair)))
            pair = wave[-1] + 1
            picks = [np.random.default_rng([seed, p]) for p in wave]
            c_idx = torch.tensor([int(contents[r.integers(len(contents))]) for r in picks])
            s_idx = torch.tensor([int(styles[r.integers(len(styles))]) for r in picks])
            pending = list(range(len(wave)))
            for trial in range(1, schedule.max_trials + 1):
                if not pending:
                    break
                settings = [schedule.settings(wave[k], trial, seed) for k in pending]
                with torch.enable_grad():
                    result = self.transfer().run(self.pool.images[c_idx[pending]].float() / 255,
                                                 self.pool.images[s_idx[pending]].float() / 255, settings)
                ok = anomaly.accepts(anomaly.score(result.images)) & classifier.accepts(
                    classifier.style_probability(result.images))
                for j, k in enumerate(pending):
                    if ok[j]:
                        accepted[wave[k]] = result.images[j].cpu()
                pending = [k for j, k in enumerate(pending) if not ok[j]]
        if len(accepted) < n:
            raise ConfigError(f"{self.name}: only {len(accepted)} of {n} '{class_name}' images passed both "
                              f"gates after {pair} pairs of up to {schedule.max_trials} trials; lower 'cutoff' "
                              f"or raise 'max_pairs_per_image' (now {self.config['max_pairs_per_image']})")
        return torch.stack([accepted[p] for p in sorted(accepted)[:n]])


__all__ = ["GatedStyleTransferGenerator"]
