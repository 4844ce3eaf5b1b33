"""Adaptive discriminator augmentation (Karras et al. 2020), in plain PyTorch.

:class:`AugmentPipe` applies random, differentiable augmentations to every
image the discriminator sees, real or fake. Each augmentation is applied to
each image independently with probability ``p``:

* geometric (one combined affine warp, bilinear with reflection at the
  borders): x-flip, 90° rotations, integer translation (up to 1/8 of the
  side), isotropic scaling, arbitrary rotation (before and after the
  scaling, each with probability 1 - sqrt(1 - p) as in the paper), anisotropic
  scaling, fractional translation;
* colour (one 4×4 colour matrix per image): brightness, contrast, luma flip,
  and for RGB hue rotation and saturation. On grey images the matrix acts
  through the mean of its rows, as in the released code, so the luma flip
  inverts the image (x -> -x in [-1, 1]); ``grey_lumaflip=False`` skips it.

Everything is a differentiable function of the pixels, so generator gradients
flow through it. With ``oversample=True`` (the released code's way) the warp
runs on a reflect-padded copy up-sampled 2× with a symlet-6 wavelet filter,
then filters and down-samples back, which limits aliasing; ``False`` samples
the image directly (faster, what oncosynth did before).

:class:`AdaController` is the overfitting heuristic: it collects
``r_t = E[sign(D(real))]`` over a few steps and moves ``p`` up when ``r_t`` is
above the target (0.6) and down otherwise, at a speed such that ``p`` can go
from 0 to 1 in ``speed_img`` images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.generators.resample import downsample2d, setup_filter, upsample2d

# Daubechies' symlet-6 low-pass taps (PyWavelets' "sym6"): the anti-aliasing filter of the 2× warp.
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]


def _eye(n: int, batch: int, device) -> torch.Tensor:
    return torch.eye(n, device=device).expand(batch, n, n).clone()


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(3, len(tx), tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(3, len(sx), sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(3, len(theta), theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


class AugmentPipe(nn.Module):
    """Random differentiable augmentations with a shared probability ``p`` (a buffer)."""

    def __init__(self, xflip: float = 1, rotate90: float = 1, xint: float = 1, scale: float = 1,
                 rotate: float = 1, aniso: float = 1, xfrac: float = 1, brightness: float = 1,
                 contrast: float = 1, lumaflip: float = 1, hue: float = 1, saturation: float = 1,
                 xint_max: float = 0.125, scale_std: float = 0.2, rotate_max: float = 1.0,
                 aniso_std: float = 0.2, xfrac_std: float = 0.125, brightness_std: float = 0.2,
                 contrast_std: float = 0.5, hue_max: float = 1.0, saturation_std: float = 1.0,
                 grey_lumaflip: bool = True, oversample: bool = True):
        super().__init__()
        self.grey_lumaflip, self.oversample = grey_lumaflip, oversample
        self.register_buffer("fir_geom", setup_filter(SYM6), persistent=False)
        self.weights = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate,
                            aniso=aniso, xfrac=xfrac, brightness=brightness, contrast=contrast,
                            lumaflip=lumaflip, hue=hue, saturation=saturation)
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std
        self.register_buffer("p", torch.zeros([]))

    def _chosen(self, name: str, batch: int, device, prob: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image 0/1 mask: apply augmentation ``name`` to this image?"""
        prob = self.p * self.weights[name] if prob is None else prob
        return (torch.rand(batch, device=device) < prob).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if float(self.p) <= 0:
            return images  # exactly the identity when augmentation is off
        n, c, h, w = images.shape
        dev = images.device
        images = self._geometric(images, n, dev)
        return self._colour(images, n, c, dev)

    # -- geometric: build one 3×3 matrix per image mapping output -> input coordinates in [-1, 1]
    def _geometric(self, images: torch.Tensor, n: int, dev) -> torch.Tensor:
        G = _eye(3, n, dev)
        # x-flip: mirror half of the chosen images
        flip = self._chosen("xflip", n, dev) * torch.randint(2, (n,), device=dev).float()
        G = G @ _scale(1 - 2 * flip, torch.ones(n, device=dev))
        # 90° rotations: k quarter turns
        quarter = self._chosen("rotate90", n, dev) * torch.randint(4, (n,), device=dev).float()
        G = G @ _rotate(quarter * (math.pi / 2))
        # integer translation, up to xint_max of the side, rounded to whole pixels
        size = images.shape[-1]
        t = (torch.rand(2, n, device=dev) * 2 - 1) * self.xint_max
        t = torch.round(t * size) / size * 2 * self._chosen("xint", n, dev)  # normalised coords span 2
        G = G @ _translate(t[0], t[1])
        # isotropic scaling, log2-normal
        s = torch.exp2(torch.randn(n, device=dev) * self.scale_std * self._chosen("scale", n, dev))
        G = G @ _scale(s, s)
        # arbitrary rotation before and after anisotropic scaling
        p_rot = 1 - torch.sqrt((1 - self.p * self.weights["rotate"]).clamp(0, 1))
        r = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max * self._chosen("rotate", n, dev, p_rot)
        G = G @ _rotate(r)
        a = torch.exp2(torch.randn(n, device=dev) * self.aniso_std * self._chosen("aniso", n, dev))
        G = G @ _scale(a, 1 / a)
        r = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max * self._chosen("rotate", n, dev, p_rot)
        G = G @ _rotate(r)
        # fractional translation, normal with std xfrac_std of the side
        t = torch.randn(2, n, device=dev) * self.xfrac_std * 2 * self._chosen("xfrac", n, dev)
        G = G @ _translate(t[0], t[1])

        if torch.equal(G, _eye(3, n, dev)):
            return images
        if self.oversample:
            return self._warp_oversampled(images, G)
        grid = F.affine_grid(G[:, :2, :].to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _warp_oversampled(self, images: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Warp by G (output -> input, normalised coordinates) at twice the resolution.

        In pixel units about the image centre: reflect-pad as far as the warped
        corners reach (plus the filter's support), up-sample 2× with the symlet
        filter, sample bilinearly (zeros outside), filter and down-sample 2×
        (the filter flipped, so up then down is the identity) and crop.
        """
        n, c, h, w = images.shape
        dev, dtype = images.device, images.dtype
        to_pixels = _scale(torch.full((n,), w / 2, device=dev), torch.full((n,), h / 2, device=dev))
        G = to_pixels @ G @ torch.linalg.inv(to_pixels)
        support = len(SYM6) // 4
        cx, cy = (w - 1) / 2, (h - 1) / 2
        corners = torch.tensor([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1.0, 1.0, 1.0, 1.0]], device=dev)
        reach = (G @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)             # x, y × (batch · corner)
        margin = torch.cat([-reach, reach]).max(dim=1).values                   # x0, y0, x1, y1
        margin = margin + torch.tensor([2 * support - cx, 2 * support - cy] * 2, device=dev)
        margin = margin.clamp(min=0).minimum(torch.tensor([w - 1, h - 1] * 2, device=dev, dtype=margin.dtype))
        mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().tolist())
        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        ones = torch.ones(n, device=dev)
        G = _translate(ones * (mx0 - mx1) / 2, ones * (my0 - my1) / 2) @ G     # the centre moved
        images = upsample2d(images, self.fir_geom.to(dtype), up=2)
        # Pixel (centre) coordinates at 2×: x2 = 2 x - 0.5 on both sides of G.
        half, shift = _scale(ones * 2, ones * 2), _translate(ones * -0.5, ones * -0.5)
        G = shift @ half @ G @ torch.linalg.inv(half) @ torch.linalg.inv(shift)
        out_h, out_w = (h + 2 * support) * 2, (w + 2 * support) * 2
        to_norm_in = _scale(ones * 2 / images.shape[3], ones * 2 / images.shape[2])
        from_norm_out = _scale(ones * out_w / 2, ones * out_h / 2)
        G = to_norm_in @ G @ from_norm_out
        grid = F.affine_grid(G[:, :2, :].to(dtype), [n, c, out_h, out_w], align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return downsample2d(images, self.fir_geom.to(dtype), down=2, padding=-2 * support, flip_filter=True)

    # -- colour: one 4×4 matrix per image acting on homogeneous (r, g, b, 1)
    def _colour(self, images: torch.Tensor, n: int, c: int, dev) -> torch.Tensor:
        C = _eye(4, n, dev)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)  # the grey axis
        b = torch.randn(n, device=dev) * self.brightness_std * self._chosen("brightness", n, dev)
        C = _translate3(b) @ C
        k = torch.exp2(torch.randn(n, device=dev) * self.contrast_std * self._chosen("contrast", n, dev))
        C = _scale3(k) @ C
        outer = torch.outer(luma, luma)
        if c == 3 or self.grey_lumaflip:
            flip = self._chosen("lumaflip", n, dev) * torch.randint(2, (n,), device=dev).float()
            C = (_eye(4, n, dev) - 2 * outer * flip[:, None, None]) @ C  # Householder reflection
        if c == 3:
            theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.hue_max * self._chosen("hue", n, dev)
            C = _rotate3_about_luma(theta, luma[:3]) @ C
            s = torch.exp2(torch.randn(n, device=dev) * self.saturation_std * self._chosen("saturation", n, dev))
            C = (outer + (_eye(4, n, dev) - outer) * s[:, None, None]) @ C
        if torch.equal(C, _eye(4, n, dev)):
            return images
        flat = images.reshape(n, c, -1)
        if c == 3:
            flat = C[:, :3, :3] @ flat + C[:, :3, 3:]
        else:  # grey: the mean of the RGB rows; a luma flip then maps x to -x
            rows = C[:, :3, :].mean(dim=1, keepdim=True)
            flat = flat * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]
        return flat.reshape(images.shape)


def _translate3(b: torch.Tensor) -> torch.Tensor:
    m = _eye(4, len(b), b.device)
    m[:, :3, 3] = b[:, None]
    return m


def _scale3(k: torch.Tensor) -> torch.Tensor:
    m = _eye(4, len(k), k.device)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = k
    return m


def _rotate3_about_luma(theta: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation by ``theta`` about the unit grey axis, embedded in 4×4."""
    x, y, z = axis.tolist()
    K = torch.tensor([[0, -z, y], [z, 0, -x], [-y, x, 0]], device=theta.device)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    R = torch.eye(3, device=theta.device) + s * K + (1 - c) * (K @ K)
    m = _eye(4, len(theta), theta.device)
    m[:, :3, :3] = R
    return m


class AdaController:
    """Moves ``pipe.p`` toward the r_t target; call ``observe`` on D's real logits, ``update`` each step."""

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, speed_img: int = 500_000,
                 p_max: float | None = 1.0):
        self.pipe, self.target, self.interval, self.speed_img = pipe, target, interval, speed_img
        self.p_max = p_max  # None: unbounded, as released (p >= 1 augments as p = 1, but takes longer to fall)
        self.sign_sum, self.count, self.steps_since = 0.0, 0, 0
        self.last_rt: float | None = None

    def observe(self, real_logits: torch.Tensor) -> None:
        self.sign_sum += float(torch.sign(real_logits.detach()).sum())
        self.count += real_logits.numel()

    def update(self, batch_size: int) -> None:
        self.steps_since += 1
        if self.steps_since < self.interval or self.count == 0:
            return
        self.last_rt = self.sign_sum / self.count
        direction = math.copysign(1.0, self.last_rt - self.target) if self.last_rt != self.target else 0.0
        step = direction * batch_size * self.interval / self.speed_img
        self.pipe.p.copy_((self.pipe.p + step).clamp(0, self.p_max))
        self.sign_sum, self.count, self.steps_since = 0.0, 0, 0

    def state_dict(self) -> dict:
        return {"sign_sum": self.sign_sum, "count": self.count, "steps_since": self.steps_since,
                "last_rt": self.last_rt}

    def load_state_dict(self, state: dict) -> None:
        self.sign_sum, self.count = float(state["sign_sum"]), int(state["count"])
        self.steps_since, self.last_rt = int(state["steps_since"]), state["last_rt"]
