"""SinGAN (Shaham, Dekel, Michaeli 2019): a generative model learnt from one image.

One SinGAN is a pyramid of small fully convolutional GANs. Scale 0 is the
coarsest (``min_size`` px on the short side); every finer scale is
``scale_factor`` times larger (the factor is adjusted slightly so that the
pyramid ends exactly at the training size, which is the image's size capped
at ``max_size``). Scale ``k`` has a generator ``G_k`` and a patch critic
``D_k`` (``blocks`` conv layers of ``filters`` channels, 3×3 kernels). The
generator refines the upsampled output of the scale below:

    x_k = up(x_{k-1}) + G_k(up(x_{k-1}) + a_k · z_k)

Scales are trained one after another, coarse to fine, with the lower ones
frozen: WGAN-GP (gradient penalty weight 0.1) plus a reconstruction loss
(weight 10) that asks a fixed noise map at scale 0 (and no noise above) to
reproduce the training image. The noise amplitude ``a_k`` of a scale is
``noise_amp`` times the RMS error of the reconstruction coming from below
(``a_0 = 1``). Adam, lr 5e-4, beta1 0.5, lr × 0.1 after 80 % of a scale's
iterations; 3 critic and 3 generator steps per iteration.

How this differs from the original code, deliberately:

* no in-place operation on anything autograd needs: every generator step
  makes a fresh forward pass (the original re-used one graph across steps
  after ``optimizer.step()`` had changed the weights in place, which newer
  PyTorch rejects), and no activation is in-place;
* frozen scales run under ``torch.no_grad`` with ``requires_grad=False`` and
  the fixed reconstruction input of a scale is computed once, so memory does
  not grow with the number of scales;
* instance normalisation instead of batch norm: the original trains with a
  batch of one, where batch norm *is* instance norm; keeping it per image
  makes a sample independent of the other images in its batch;
* fewer iterations per scale by default (``iters``; the paper used 2000, the
  ``paper`` preset restores that) so that a 128 px image trains in minutes on
  a CPU.

The package: ``model`` (pyramid and networks), ``train`` (one SinGAN on one
image, with per-scale resume), ``group`` (many SinGANs of a class as executor
units) and ``adapter`` (the group as the registered generator ``singan``).
"""

from oncosynth.generators.singan.adapter import SinGAN
from oncosynth.generators.singan.group import (GROUP_PLAN, SUMMARY, train_group, train_member_unit)
from oncosynth.generators.singan.model import (DEFAULTS, MEMBER_KIND, MODEL_KEYS, ScaleNet, SinGANMember,
                                               load_member, pyramid_sizes, sample_member, save_member)
from oncosynth.generators.singan.train import PARTIAL_KIND, SinGANDiverged, train_singan

__all__ = [
    "SinGAN", "GROUP_PLAN", "SUMMARY", "train_group", "train_member_unit", "DEFAULTS", "MEMBER_KIND",
    "MODEL_KEYS", "ScaleNet", "SinGANMember", "load_member", "pyramid_sizes", "sample_member", "save_member",
    "PARTIAL_KIND", "SinGANDiverged", "train_singan",
]
