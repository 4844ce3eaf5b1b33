"""period2_amplitude: a planted 2-pixel checkerboard or stripe is measured at its amplitude; smooth images give 0."""

from __future__ import annotations

import pytest
import torch

from oncosynth.metrics.artefacts import period2_amplitude


def test_planted_patterns_are_measured_at_their_amplitude_and_smooth_images_at_zero():
    flat = torch.full((3, 1, 32, 32), 0.4)
    ramp = torch.linspace(0, 1, 32).expand(3, 1, 32, 32).contiguous()
    assert period2_amplitude(flat) == 0.0
    # a ramp holds no 2-px pattern (without the [-1, 2, -1] filter it would read as half its slope: 4.1)
    assert period2_amplitude(ramp) < 1e-3
    assert period2_amplitude(ramp.transpose(2, 3) ** 2) < 1e-3  # nor does a parabola
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = (1 - 2 * ((rows + cols) % 2)).float() * 4 / 255
    stripes = (1 - 2 * (cols % 2)).float() * 4 / 255
    for pattern in (checker, stripes):
        assert period2_amplitude(flat + pattern) == pytest.approx(4.0, rel=1e-4)
    # only part of the set carries it: the RMS over the set
    half = flat.clone()
    half[0] += checker
    assert period2_amplitude(half) == pytest.approx(4.0 / 3**0.5, rel=1e-4)
    # white noise is not a coherent pattern: ~ sigma * sqrt(3) / window
    noise = flat + torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 8 / 255
    assert 0.5 < period2_amplitude(noise, window=8) < 3.0


def test_bad_shapes_and_windows_are_named():
    with pytest.raises(ValueError, match="N x C x H x W"):
        period2_amplitude(torch.zeros(32, 32))
    with pytest.raises(ValueError, match="window"):
        period2_amplitude(torch.zeros(1, 1, 32, 32), window=3)
    with pytest.raises(ValueError, match="window"):
        period2_amplitude(torch.zeros(1, 1, 9, 9), window=8)
