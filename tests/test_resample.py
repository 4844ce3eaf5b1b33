"""FIR resampling (upfirdn2d semantics): border values, conventions, and the fused convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oncosynth.generators.ada import SYM6
from oncosynth.generators.resample import conv2d_resample, downsample2d, setup_filter, upfirdn2d, upsample2d

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_upsampling_a_constant_image_gives_the_released_border_values(device):
    # StyleGAN2's skip path: 2x up-sampling with [1, 3, 3, 1], zero padding outside the image.
    up = upsample2d(torch.ones(1, 1, 4, 4, device=device), setup_filter([1, 3, 3, 1]).to(device))[0, 0].cpu()
    assert up.shape == (8, 8)
    assert torch.allclose(up[1:-1, 1:-1], torch.ones(6, 6))
    for edge in (up[0, 1:-1], up[-1, 1:-1], up[1:-1, 0], up[1:-1, -1]):
        assert torch.allclose(edge, torch.full((6,), 0.75))
    assert torch.allclose(up[[0, 0, -1, -1], [0, -1, 0, -1]], torch.full((4,), 0.5625))


def test_downsampling_a_constant_image_keeps_the_interior():
    down = downsample2d(torch.ones(1, 1, 8, 8), setup_filter([1, 3, 3, 1]))[0, 0]
    assert down.shape == (4, 4)
    assert torch.allclose(down[1:-1, 1:-1], torch.ones(2, 2))
    assert torch.allclose(down[0, 1:-1], torch.full((2,), 7 / 8))     # one tap of eight falls outside
    assert torch.isclose(down[0, 0], torch.tensor(49 / 64))


def test_filter_is_a_true_convolution_unless_flipped():
    impulse = torch.zeros(1, 1, 1, 5)
    impulse[..., 2] = 1
    taps = torch.tensor([[1.0, 2.0, 4.0]])  # 2-D, 1 x 3, not normalised by upfirdn2d itself
    conv = upfirdn2d(impulse, taps, padding=[1, 1, 0, 0])[0, 0, 0]
    corr = upfirdn2d(impulse, taps, padding=[1, 1, 0, 0], flip_filter=True)[0, 0, 0]
    assert conv.tolist() == [0.0, 1.0, 2.0, 4.0, 0.0]
    assert corr.tolist() == [0.0, 4.0, 2.0, 1.0, 0.0]
    assert torch.allclose(upfirdn2d(impulse, taps, padding=[1, 1, 0, 0], gain=3)[0, 0, 0], conv * 3)


def test_setup_filter_normalises_and_picks_separable_for_long_filters():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and torch.isclose(f.sum(), torch.tensor(1.0))
    g = setup_filter(SYM6)
    assert g.ndim == 1 and torch.isclose(g.sum(), torch.tensor(1.0))
    assert torch.isclose(setup_filter([1, 3, 3, 1], gain=4).sum(), torch.tensor(4.0))


def test_orthogonal_wavelet_up_then_flipped_down_is_the_identity():
    # Perfect reconstruction of symlet-6: what ADA's 2x oversampled warp relies on at p = 0.
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    f = setup_filter(SYM6).double()
    up = upsample2d(x, f)
    back = downsample2d(up, f, flip_filter=True)
    assert torch.allclose(back[..., 6:-6, 6:-6], x[..., 6:-6, 6:-6], atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_resample_up_equals_zero_insertion_then_fir_then_convolution(device, flip_weight, groups):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, device=device)
    w = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64, device=device)
    f = setup_filter([1, 3, 3, 1]).double().to(device)
    fused = conv2d_resample(x, w, f, up=2, padding=1, groups=groups, flip_weight=flip_weight)
    # The slow way: zero insertion, padding once (1 + the filter's), FIR with gain 4, then a valid conv.
    slow = upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4)
    slow = F.conv2d(slow, w if flip_weight else w.flip([2, 3]), groups=groups)
    assert fused.shape == slow.shape == (2, 6, 10, 12)
    assert torch.allclose(fused, slow, atol=1e-10)


@pytest.mark.parametrize("kernel", [1, 3])
def test_conv2d_resample_down_equals_fir_then_strided_convolution(kernel):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w = torch.randn(5, 3, kernel, kernel, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    fused = conv2d_resample(x, w, f, down=2, padding=kernel // 2)
    blurred = upfirdn2d(x, f, padding=kernel // 2 + 1)                  # blur, padding 1 + the filter's
    slow = F.conv2d(blurred, w)[:, :, ::2, ::2]
    assert fused.shape == slow.shape == (2, 5, 4, 4)
    assert torch.allclose(fused, slow, atol=1e-10)
    plain = conv2d_resample(x, w, padding=kernel // 2)
    assert torch.allclose(plain, F.conv2d(x, w, padding=kernel // 2))
