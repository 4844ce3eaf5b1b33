"""Moved to :mod:`oncosynth.parallel.distributed`; this thin re-export stays for one release."""

from oncosynth.parallel.distributed import (SINGLE, DistContext, GlobalBatchNorm2d, all_reduce_sum,
                                            average_gradients_before_step, broadcast_parameters, check_batch,
                                            globalise_batchnorm, init_distributed, launched_by_torchrun, shutdown)

__all__ = ["SINGLE", "DistContext", "GlobalBatchNorm2d", "all_reduce_sum", "average_gradients_before_step",
           "broadcast_parameters", "check_batch", "globalise_batchnorm", "init_distributed", "launched_by_torchrun",
           "shutdown"]
