"""Test-time augmentation: the views a model predicts each batch under, averaged into one probability set.

Views are named and applied to the batch at the model's input size, on its device. They stay within
what training showed the model: mirror images, and scales of 0.9x..1.1x about the centre with a zero
border (the `medium` preset's Affine). `--tta` takes a preset name or a comma-separated list of views.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from maskds.core.errors import UserError
from maskds.core.probabilities import KEYS, HeadSpec, probabilities

SCALE = 1.1  # zoom: the centre 1/1.1 of the image enlarged; shrink: the image at 1/1.1, zero border


def _zoom(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = round(h / SCALE), round(w / SCALE)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw].float()
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=False)


def _shrink(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    sh, sw = round(h / SCALE), round(w / SCALE)
    small = F.interpolate(x.float(), size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (h - sh) // 2, (w - sw) // 2
    return F.pad(small, (left, w - sw - left, top, h - sh - top))


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=[-1])


VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "orig": lambda x: x,
    "hflip": _hflip,
    "zoom": _zoom,
    "zoom_hflip": lambda x: _hflip(_zoom(x)),
    "shrink": _shrink,
    "shrink_hflip": lambda x: _hflip(_shrink(x)),
}
TTA_PRESETS = {
    "none": ("orig",),
    "hflip": ("orig", "hflip"),
    "zoom": ("orig", "hflip", "zoom", "zoom_hflip"),
    "scales": ("orig", "hflip", "zoom", "zoom_hflip", "shrink", "shrink_hflip"),
}


def parse_tta(value: str) -> tuple[str, ...]:
    """A preset name (none, hflip, zoom, scales) or comma-separated view names -> the views, in order."""
    if value in TTA_PRESETS:
        return TTA_PRESETS[value]
    views = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown or len(set(views)) != len(views):
        raise UserError(f"--tta {value!r}: give a preset ({', '.join(TTA_PRESETS)}) or distinct view names "
                        f"separated by commas ({', '.join(VIEWS)})" + (f"; unknown: {', '.join(unknown)}"
                                                                      if unknown else ""))
    return views


def forward_views(model: nn.Module, x: torch.Tensor, spec: HeadSpec, views: tuple[str, ...],
                  autocast) -> dict[str, torch.Tensor]:
    """One model's probabilities averaged over the TTA views, left on x's device: the caller moves
    them once at the end instead of waiting for the GPU every batch."""
    total = None
    for name in views:
        with autocast():
            logits = model(VIEWS[name](x))
        p = probabilities(logits.float(), spec)
        total = p if total is None else {k: total[k] + p[k] for k in KEYS}
    return {k: total[k] / len(views) for k in KEYS}
