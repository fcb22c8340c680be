"""Mixup and CutMix for multi-head targets: the images are mixed, and so are the losses.

A mixed batch x' = lam x + (1 - lam) x.flip(0) (Mixup), or x with a box pasted from x.flip(0) (CutMix,
lam = the area left), is scored as lam L(y) + (1 - lam) L(y.flip(0)): for cross-entropy that is exactly
the loss of the mixed one-hot targets timm's Mixup builds, and it holds for every head here, the
numeric age heads and the label-masked rows included. lam is drawn as timm draws it (Beta(alpha,
alpha), one per batch), from a generator seeded by (seed, epoch, batch, process): a resumed run mixes
exactly as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class MixOptions:
    mixup_alpha: float = 0.0     # > 0: Mixup with lam ~ Beta(alpha, alpha)
    cutmix_alpha: float = 0.0    # > 0: CutMix with lam ~ Beta(alpha, alpha)
    prob: float = 1.0            # the share of batches mixed
    switch_prob: float = 0.5     # with both on: the share of mixed batches that use CutMix

    @property
    def on(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def mix_batch(x: torch.Tensor, options: MixOptions, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """(the mixed batch, lam); (x, 1.0) when this batch is not mixed. x: [B, 3, H, W], uint8 or float."""
    if not options.on or rng.random() >= options.prob:
        return x, 1.0
    cutmix = options.cutmix_alpha > 0 and (options.mixup_alpha <= 0 or rng.random() < options.switch_prob)
    alpha = options.cutmix_alpha if cutmix else options.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if not cutmix:
        return x.float() * lam + x.flip(0).float() * (1.0 - lam), lam
    h, w = x.shape[-2:]
    ch, cw = int(h * np.sqrt(1.0 - lam)), int(w * np.sqrt(1.0 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x.flip(0)[..., top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (h * w)  # the area actually kept


def mixed_loss(loss_fn: Callable, lam: float) -> Callable:
    """loss(logits, y) of a batch mixed with its reverse at `lam`."""
    if lam >= 1.0:
        return loss_fn
    return lambda logits, y: lam * loss_fn(logits, y) + (1.0 - lam) * loss_fn(logits, y.flip(0))


def batch_rng(seed: int, epoch: int, batch: int, process: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, batch, process])
