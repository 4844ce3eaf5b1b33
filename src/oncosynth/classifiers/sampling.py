"""Which training rows make up each batch: shuffled passes, class balancing, a real/synthetic mix.

The training set is real rows ``[0, n_real)`` followed by synthetic rows
``[n_real, n)``. Without a mix every row is equally likely (the synthetic
share of a batch is then proportional to the counts). With ``mix = m`` the
number of synthetic rows in a batch is Binomial(batch, m), so the *expected*
share is ``m`` whatever the pool sizes; each pool is walked in its own
shuffled passes. A pass continues across epochs and evaluations, and the
position is part of the resume state, so a resumed run draws the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import torch

from oncosynth.errors import ConfigError


class IndexStream:
    """Indices ``offset .. offset + n - 1`` in shuffled passes, continuing where the last call stopped."""

    def __init__(self, n: int, offset: int = 0):
        self.n, self.offset = n, offset
        self.order = torch.zeros(0, dtype=torch.int64)
        self.position = 0

    def take(self, k: int, generator: torch.Generator) -> torch.Tensor:
        parts, need = [], k
        while need > 0:
            if self.position >= len(self.order):
                self.order, self.position = torch.randperm(self.n, generator=generator), 0
            chunk = self.order[self.position : self.position + need]
            self.position += len(chunk)
            need -= len(chunk)
            parts.append(chunk)
        return torch.cat(parts) + self.offset if parts else torch.zeros(0, dtype=torch.int64)

    def state_dict(self) -> dict:
        return {"order": self.order.clone(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = state["order"], int(state["position"])


class BatchPlan:
    """Draws the row indices of each batch (see the module docstring)."""

    def __init__(self, labels: torch.Tensor, batch_size: int, num_classes: int, n_synthetic: int = 0,
                 mix: float | None = None, oversample: bool = False):
        n = len(labels)
        if not 0 <= n_synthetic <= n:
            raise ConfigError(f"n_synthetic must lie in [0, {n}], not {n_synthetic}")
        if mix is not None and not 0 <= mix <= 1:
            raise ConfigError(f"synthetic mix must lie in [0, 1], not {mix}")
        if mix is not None and oversample and n_synthetic:
            raise ConfigError("a synthetic mix and class oversampling cannot be combined")
        self.batch_size, self.n_real = batch_size, n - n_synthetic
        self.mix = mix if n_synthetic and self.n_real else None
        self.oversample = oversample
        self.pending: torch.Tensor | None = None  # an epoch's pre-drawn oversampled rows
        self.taken = 0
        if oversample:
            counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
            self.weights = (1.0 / counts)[labels]
        if self.mix is None:
            self.streams = [IndexStream(n)]
        else:
            self.streams = [IndexStream(self.n_real), IndexStream(n_synthetic, offset=self.n_real)]

    def start_epoch(self, steps: int, generator: torch.Generator) -> None:
        """Epoch budgets: each epoch is one fresh shuffled pass (its remainder dropped) or, oversampling,
        one draw of ``steps`` batches -- the batches of the loop before step budgets existed, so epoch
        studies give the same results as before. A mix keeps streaming across epochs."""
        self.pending = None
        if self.oversample:
            self.pending = torch.multinomial(self.weights, steps * self.batch_size, replacement=True,
                                             generator=generator)
            self.taken = 0
        elif self.mix is None:
            self.streams[0].order, self.streams[0].position = torch.zeros(0, dtype=torch.int64), 0

    def next(self, generator: torch.Generator) -> torch.Tensor:
        if self.pending is not None:
            index = self.pending[self.taken : self.taken + self.batch_size]
            self.taken += self.batch_size
            return index
        if self.oversample:  # classes drawn equally often, rows with replacement
            return torch.multinomial(self.weights, self.batch_size, replacement=True, generator=generator)
        if self.mix is None:
            return self.streams[0].take(self.batch_size, generator)
        synthetic = int(torch.binomial(torch.tensor(float(self.batch_size)), torch.tensor(self.mix),
                                       generator=generator))
        return torch.cat([self.streams[0].take(self.batch_size - synthetic, generator),
                          self.streams[1].take(synthetic, generator)])

    def count_synthetic(self, index: torch.Tensor) -> int:
        return int((index >= self.n_real).sum())

    def state_dict(self) -> dict:
        return {"streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        for stream, saved in zip(self.streams, state["streams"]):
            stream.load_state_dict(saved)
