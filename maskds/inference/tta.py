"""Test-time augmentation: the views a model predicts each batch under, averaged into one probability set."""
from __future__ import annotations

import torch
from torch import nn

from ..core.probabilities import KEYS, HeadSpec, probabilities

TTA_VIEWS = {"none": 1, "hflip": 2}  # name -> number of views (view 2: the batch flipped left-right)


def forward_views(model: nn.Module, x: torch.Tensor, spec: HeadSpec, views: int, autocast) -> dict[str, torch.Tensor]:
    """One model's probabilities averaged over TTA views (view 2: the batch flipped left-right), left on
    x's device: the caller moves them once at the end instead of waiting for the GPU every batch."""
    total = None
    for v in range(views):
        with autocast():
            logits = model(x if v == 0 else torch.flip(x, dims=[-1]))
        p = probabilities(logits.float(), spec)
        total = p if total is None else {k: total[k] + p[k] for k in KEYS}
    return {k: total[k] / views for k in KEYS}
