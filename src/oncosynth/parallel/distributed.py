"""Data-parallel training of one model over several processes, started by ``torchrun``.

``torchrun --nproc_per_node=N ... oncosynth train-generator ... --distributed``
(or ``oncosynth study ... --distributed``) starts N copies; each one calls
:func:`init_distributed`, which joins the process group through torchrun's
environment (``env://``; NCCL on CUDA, gloo on CPU).

How a step is split, so that N processes compute what one process would for
the same global batch:

* every rank draws the *global* batch (indices, latents, augmentation
  parameters) from identically seeded generators, then keeps its own share,
  rows ``rank::world`` -- what ``DistributedSampler`` does with a data set;
* gradients are averaged over ranks before each optimiser step (classifiers:
  ``torch.nn.parallel.DistributedDataParallel``; GANs, whose step calls the
  discriminator three times before stepping: an all-reduce in an optimiser
  pre-step hook, as NVIDIA's StyleGAN2-ADA code does), so a mean loss over the
  local share gives the gradient of the mean over the global batch;
* BatchNorm layers become :class:`GlobalBatchNorm2d`, which normalises with the
  statistics of the global batch (like ``torch.nn.SyncBatchNorm``, which works
  only on GPUs). Plain per-rank BatchNorm would normalise each share with its
  own statistics and the result would no longer equal single-process training.

What remains different is the order of floating-point sums (a rank sums its
share, then the shares are summed), so weights agree with single-process
training to a tolerance, not bitwise; tests/test_distributed.py measures it.
Only rank 0 writes checkpoints, logs and results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn

from oncosynth.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def share(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the global batch (rows ``rank::world``)."""
        return tensor[self.rank::self.world_size] if self.active else tensor

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_batch(global_batch: int, world_size: int, what: str = "batch size") -> int:
    """The per-rank batch; a clear error when ``world_size`` does not divide ``global_batch``."""
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, not {world_size}")
    if global_batch % world_size:
        raise ConfigError(f"the {what} {global_batch} cannot be split over {world_size} processes "
                          f"(torchrun --nproc_per_node x --nnodes); choose a {what} divisible by {world_size}")
    return global_batch // world_size


def init_distributed(device: str = "auto", global_batch: int | None = None) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up; return the context and this rank's device.

    Checks (before any work): started by torchrun, ``global_batch`` divisible by the world size,
    one GPU per local rank when training on CUDA.
    """
    if not launched_by_torchrun():
        raise ConfigError("--distributed needs to be started by torchrun, e.g. "
                          "`torchrun --standalone --nproc_per_node=2 -m oncosynth.cli train-generator ... "
                          "--distributed` (WORLD_SIZE/RANK are not set)")
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if global_batch is not None:
        check_batch(global_batch, world_size)
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this node")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                              f"use --nproc_per_node <= {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank)
        backend, device_t = "nccl", torch.device("cuda", local_rank)
    else:
        backend, device_t = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistContext(rank, world_size, local_rank, backend), device_t


def shutdown(context: DistContext) -> None:
    if context.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------- gradients ----
def average_gradients_before_step(optimizer: torch.optim.Optimizer, context: DistContext) -> None:
    """Make ``optimizer.step()`` first average its parameters' gradients over all ranks."""
    if not context.active:
        return

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= context.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    optimizer.register_step_pre_hook(hook)


def broadcast_parameters(modules: Iterable[nn.Module], context: DistContext) -> None:
    """Start every rank from rank 0's weights and buffers (they should agree already; this makes sure)."""
    if not context.active:
        return
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


# ------------------------------------------------------------- BatchNorm ----
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce (sum) over the default process group."""
    return _AllReduceSum.apply(tensor)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with the mean and variance of the global batch, on CPU (gloo) and GPU (NCCL).

    Statistics are summed over ranks with a differentiable all-reduce, so the backward pass
    is that of BatchNorm over the global batch.
    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        sums = all_reduce_sum(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce_sum(centred.square().sum(dim=(0, 2, 3))) / n  # two passes, as BatchNorm does
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def globalise_batchnorm(module: nn.Module) -> int:
    """Swap every ``nn.BatchNorm2d`` in ``module`` for :class:`GlobalBatchNorm2d`, in place.

    The parameter objects are kept, so optimisers built before the swap still hold them.
    Returns how many layers were swapped.
    """
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d or (isinstance(child, nn.BatchNorm2d)
                                                and not isinstance(child, GlobalBatchNorm2d)
                                                and type(child).forward is nn.BatchNorm2d.forward):
                replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                                child.track_running_stats)
                if child.affine:
                    replacement.weight, replacement.bias = child.weight, child.bias
                if child.track_running_stats:
                    replacement.running_mean = child.running_mean
                    replacement.running_var = child.running_var
                    replacement.num_batches_tracked = child.num_batches_tracked
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped += 1
    return swapped


__all__ = ["DistContext", "SINGLE", "GlobalBatchNorm2d", "average_gradients_before_step", "broadcast_parameters",
           "check_batch", "globalise_batchnorm", "init_distributed", "launched_by_torchrun", "shutdown"]
