"""StyleGAN2-ADA's networks (Karras et al. 2020) in plain PyTorch, class-conditional.

With ``resample="fir"`` and ``conv_clamp=256`` these compute the same
functions of the same weights as ``training/networks.py`` of NVlabs'
stylegan2-ada-pytorch (in float32; the released code runs its four highest
resolutions in float16 on GPUs), with the ``skip`` generator and ``resnet``
discriminator it trains by default:

* mapping: z and an embedded one-hot class, each normalised to unit second
  moment, concatenated, then ``layers`` fully connected layers (lr multiplier
  0.01); one w per layer of the synthesis network ("ws"), and a running mean
  of w for the truncation trick;
* synthesis: a learned 4×4 constant, per resolution a modulated 3×3
  convolution with 2× up-sampling (a strided transposed convolution and the
  [1, 3, 3, 1] FIR filter), a second one, per-pixel noise, and a toRGB whose
  output is added to the FIR-up-sampled image so far;
* discriminator: fromRGB, residual blocks down-sampling by FIR blur + a
  stride-2 convolution, minibatch standard deviation, and projection
  conditioning with its own mapping network (8 layers in the released code).

``resample="bilinear"`` is what oncosynth used before: bilinear
``interpolate`` up-sampling (edge clamp) and 2×2 average pooling before a
half-resolution convolution. It is kept so older checkpoints load and compute
what they were trained to compute.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.generators.resample import conv2d_resample, downsample2d, setup_filter, upsample2d

SQRT2 = math.sqrt(2)
FIR_TAPS = [1, 3, 3, 1]


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def lrelu_clamped(x: torch.Tensor, gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    """Leaky ReLU (0.2) times sqrt(2) * gain, then clamped to ±clamp * gain, as the released code."""
    x = F.leaky_relu(x, 0.2) * (SQRT2 * gain)
    return x.clamp(-clamp * gain, clamp * gain) if clamp is not None else x


class FullyConnected(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class MappingNetwork(nn.Module):
    """(z, class) -> w. With ``z_dim=0`` it maps the class alone (the discriminator's embedding)."""

    def __init__(self, z_dim: int, num_classes: int, w_dim: int, layers: int, lr_mul: float = 0.01,
                 w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim, self.num_classes, self.w_avg_beta = z_dim, num_classes, w_avg_beta
        self.embed = FullyConnected(num_classes, w_dim)
        features = [w_dim + z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(FullyConnected(a, b, lr_mul=lr_mul, activation=True)
                                    for a, b in zip(features[:-1], features[1:]))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor, truncation: float = 1.0,
                update_w_avg: bool = True) -> torch.Tensor:
        y = normalize_2nd_moment(self.embed(F.one_hot(labels, self.num_classes).float()))
        x = y if self.z_dim == 0 else torch.cat([normalize_2nd_moment(z), y], dim=1)
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None:
            if self.training and update_w_avg:
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
            if truncation != 1:
                x = self.w_avg.lerp(x, truncation)
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                     fused: bool = True, up: int = 1, fir: torch.Tensor | None = None,
                     flip_weight: bool = True) -> torch.Tensor:
    """Convolution with per-sample weights ``weight × style`` (optionally demodulated).

    ``fused``: build the N per-sample kernels and run them as one grouped
    convolution (the paper's trick). Otherwise scale the input channels by the
    styles, run one ordinary convolution and scale the outputs by the
    demodulation coefficients -- the same function, much faster on CPU.
    ``up=2`` with a FIR filter ``fir`` up-samples as the released code does.
    """
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    pad = kh // 2
    if not fused:
        x = x * styles[:, :, None, None]
        out = conv2d_resample(x, weight, fir, up=up, padding=pad, flip_weight=flip_weight)
        if demodulate:
            dcoefs = (weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]).add(1e-8).rsqrt()
            out = out * dcoefs[:, :, None, None]
        return out
    wts = weight[None] * styles[:, None, :, None, None]               # N × out × in × k × k
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    out = conv2d_resample(x.reshape(1, n * c_in, h, w), wts.reshape(n * c_out, c_in, kh, kw), fir, up=up,
                          padding=pad, groups=n, flip_weight=flip_weight)
    return out.reshape(n, c_out, *out.shape[2:])


class StyleConv(nn.Module):
    """Modulated 3×3 conv (+ optional 2× up-sampling), noise, bias, leaky ReLU (+ clamp)."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int, up: bool = False,
                 resample: str = "fir", conv_clamp: float | None = None):
        super().__init__()
        self.up, self.resample, self.conv_clamp = up, resample, conv_clamp
        self.fused = True  # grouped-conv path; set by StyleGAN2ADA.build from config["fused_modconv"]
        self.affine = FullyConnected(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.weight_gain = 1 / math.sqrt(c_in * 9)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("fir", setup_filter(FIR_TAPS), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        weight, styles = self.weight * self.weight_gain, self.affine(w)
        if self.up and self.resample == "fir":
            # The released code's up-sampling convolution is a true convolution (flipped kernel).
            x = modulated_conv2d(x, weight, styles, True, self.fused, up=2, fir=self.fir, flip_weight=False)
        else:
            if self.up:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = modulated_conv2d(x, weight, styles, demodulate=True, fused=self.fused)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return lrelu_clamped(x + self.bias[None, :, None, None], clamp=self.conv_clamp)


class ToRGB(nn.Module):
    def __init__(self, c_in: int, channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.fused, self.conv_clamp = True, conv_clamp
        self.affine = FullyConnected(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, c_in, 1, 1))
        self.weight_gain = 1 / math.sqrt(c_in)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=self.fused) + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_max, channel_base // resolution)


class SynthesisNetwork(nn.Module):
    """ws (N × num_ws × w_dim) -> image. Conv ``j`` reads ``ws[:, j]``; the toRGB of block ``k``
    reads ``ws[:, 2k + 1]``, the w of the next block's first conv, as in the released code."""

    def __init__(self, w_dim: int, size: int, channels: int, channel_base: int, channel_max: int,
                 resample: str = "fir", conv_clamp: float | None = None):
        super().__init__()
        self.resample = resample
        c4 = channels_at(4, channel_base, channel_max)
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        self.convs = nn.ModuleList([StyleConv(c4, c4, w_dim, 4, resample=resample, conv_clamp=conv_clamp)])
        self.torgbs = nn.ModuleList([ToRGB(c4, channels, w_dim, conv_clamp)])
        res, c = 8, c4
        while res <= size:
            c_out = channels_at(res, channel_base, channel_max)
            self.convs.append(StyleConv(c, c_out, w_dim, res, up=True, resample=resample, conv_clamp=conv_clamp))
            self.convs.append(StyleConv(c_out, c_out, w_dim, res, resample=resample, conv_clamp=conv_clamp))
            self.torgbs.append(ToRGB(c_out, channels, w_dim, conv_clamp))
            res, c = res * 2, c_out
        self.num_ws = len(self.convs) + 1
        self.register_buffer("fir", setup_filter(FIR_TAPS), persistent=False)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = self.const.expand(len(ws), -1, -1, -1)
        x = self.convs[0](x, ws[:, 0], noise_mode)
        img = self.torgbs[0](x, ws[:, 1])
        for i, torgb in enumerate(self.torgbs[1:]):
            x = self.convs[1 + 2 * i](x, ws[:, 1 + 2 * i], noise_mode)
            x = self.convs[2 + 2 * i](x, ws[:, 2 + 2 * i], noise_mode)
            if self.resample == "fir":
                img = upsample2d(img, self.fir)
            else:
                img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            img = img + torgb(x, ws[:, 3 + 2 * i])
        return img


class StyleGenerator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, z_dim: int, w_dim: int, map_layers: int,
                 channel_base: int, channel_max: int, resample: str = "fir", conv_clamp: float | None = None):
        super().__init__()
        self.mapping = MappingNetwork(z_dim, num_classes, w_dim, map_layers)
        self.synthesis = SynthesisNetwork(w_dim, size, channels, channel_base, channel_max, resample, conv_clamp)
        self.num_ws = self.synthesis.num_ws

    def map(self, z: torch.Tensor, labels: torch.Tensor, truncation: float = 1.0,
            update_w_avg: bool = True) -> torch.Tensor:
        """One w per synthesis layer: N × num_ws × w_dim."""
        w = self.mapping(z, labels, truncation, update_w_avg)
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, truncation: float = 1.0,
                noise_mode: str = "random") -> torch.Tensor:
        return self.synthesis(self.map(z, labels, truncation), noise_mode)


class Conv(nn.Module):
    """Equalised-lr convolution, optional 2× down-sampling, leaky ReLU; output × gain, then clamped."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, activation: bool = True,
                 down: bool = False, resample: str = "fir", conv_clamp: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.weight_gain = 1 / math.sqrt(c_in * kernel * kernel)
        self.activation, self.down, self.resample, self.conv_clamp = activation, down, resample, conv_clamp
        self.register_buffer("fir", setup_filter(FIR_TAPS), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w, pad = self.weight * self.weight_gain, self.weight.shape[-1] // 2
        if self.down and self.resample == "fir":
            x = conv2d_resample(x, w, self.fir, down=2, padding=pad)
        else:
            if self.down:
                x = F.avg_pool2d(x, 2)
            x = F.conv2d(x, w, padding=pad)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        if self.activation:
            return lrelu_clamped(x, gain, self.conv_clamp)
        x = x * gain if gain != 1 else x
        return x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain) if self.conv_clamp is not None else x


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, resample: str = "fir", conv_clamp: float | None = None):
        super().__init__()
        self.conv0 = Conv(c_in, c_in, 3, resample=resample, conv_clamp=conv_clamp)
        self.conv1 = Conv(c_in, c_out, 3, down=True, resample=resample, conv_clamp=conv_clamp)
        self.skip = Conv(c_in, c_out, 1, bias=False, activation=False, down=True, resample=resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = math.sqrt(0.5)  # applied before the clamp, as in the released code
        return self.skip(x, gain) + self.conv1(self.conv0(x), gain)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel: the std of features across a group of images, averaged.

    Groups are images ``i, i + N/G, i + 2N/G, ...`` (a strided split, as in the
    released code); the group size is the largest divisor of N up to ``group_size``.
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.reshape(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])   # (n/g,)
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class StyleDiscriminator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, channel_base: int, channel_max: int,
                 map_layers: int, cmap_dim: int | None = None, resample: str = "fir",
                 conv_clamp: float | None = None, mbstd_group: int = 4):
        super().__init__()
        self.mbstd_group = mbstd_group
        c_top = channels_at(size, channel_base, channel_max)
        self.from_rgb = Conv(channels, c_top, 1, conv_clamp=conv_clamp)
        blocks, res = [], size
        while res > 4:
            blocks.append(ResidualBlock(channels_at(res, channel_base, channel_max),
                                        channels_at(res // 2, channel_base, channel_max), resample, conv_clamp))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = channels_at(4, channel_base, channel_max)
        self.cmap_dim = cmap_dim or c4
        self.mapping = MappingNetwork(0, num_classes, self.cmap_dim, map_layers, w_avg_beta=None)
        self.conv = Conv(c4 + 1, c4, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(c4 * 16, c4, activation=True)
        self.out = FullyConnected(c4, self.cmap_dim)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One logit per image."""
        x = self.blocks(self.from_rgb(images))
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        x = self.out(self.fc(x.flatten(1)))
        cmap = self.mapping(None, labels)
        return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)   # projection conditioning
