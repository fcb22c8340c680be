"""SAM (sharpness-aware minimization, Foret et al. 2021) around any optimizer.

Each step takes the gradient at the weights pushed uphill by `rho` along the normalized gradient,
then restores the weights and lets the optimizer step with that gradient: it prefers flat minima,
which generalize better on few persons. Two forward and backward passes per step.

Under DDP the first pass stays local (`no_sync`: each process perturbs by its own gradient, the
"m-sharpness" of the paper's own implementation) and the second is averaged as usual. BatchNorm's
running statistics are left alone in the second pass, so they are updated once per step.
The weights are restored by copying them back, not by subtracting the step: `(p + u) - u` is not `p`
in float32, and with each process's own `u` the processes' weights (never re-synced by DDP) would
drift apart.
Gradient accumulation and fp16 loss scaling are refused by the config checks and `fit`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


@contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep their running mean and variance (momentum 0) inside the block."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum


def sam_backward(accelerator, model: nn.Module, forward: Callable, loss_fn: nn.Module, x: torch.Tensor,
                 y: torch.Tensor, rho: float) -> torch.Tensor:
    """Leave in `.grad` the gradient at the perturbed weights (weights restored); return the first loss."""
    with accelerator.no_sync(model):
        loss = loss_fn(forward(x), y)
        accelerator.backward(loss)
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params]
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    uphill = torch._foreach_mul(grads, rho / (norm + 1e-12))
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        torch._foreach_add_(params, uphill)
    for p in params:
        p.grad = None
    with running_stats_frozen(model):
        accelerator.backward(loss_fn(forward(x), y))
    with torch.no_grad():
        torch._foreach_copy_(params, saved)  # bit-exact, the same on every process
    return loss
