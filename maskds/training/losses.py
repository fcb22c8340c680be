"""Training loss over 18-class targets: per-head (multihead) or 18-way, cross-entropy or focal, smoothed."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.probabilities import SLICES, check_head, num_outputs


def head_targets(cls: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mask, gender and age-band targets of 18-class ids (class = mask*6 + gender*3 + band)."""
    return {"mask": cls // 6, "gender": (cls // 3) % 2, "age": cls % 3}


def smoothed_focal_ce(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0, gamma: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy with label smoothing, times (1 - p_true)^gamma when gamma > 0 (focal loss).

    With gamma == 0 this equals `F.cross_entropy(logits, target, label_smoothing=smoothing)`.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    per_sample = (1.0 - smoothing) * nll - smoothing * logp.mean(dim=-1)
    if gamma > 0:
        p_true = torch.exp(-nll)
        per_sample = (1.0 - p_true).pow(gamma) * per_sample
    return per_sample.mean()


class MaskLoss(nn.Module):
    """Loss of a model's logits against 18-class ids.

    multihead: weighted sum of the mask (3), gender (2) and age (3) heads' losses, each head's
    target decoded from the class id. single: one 18-way loss.
    """

    def __init__(
        self,
        head: str,
        kind: str = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        head_weights: Sequence[float] = (1.0, 1.0, 1.0),
    ):
        super().__init__()
        check_head(head)
        if kind not in ("ce", "focal"):
            raise ValueError(f"loss kind must be 'ce' or 'focal', got {kind!r}")
        self.head = head
        self.smoothing = float(label_smoothing)
        self.gamma = float(focal_gamma) if kind == "focal" else 0.0
        self.weights = dict(zip(("mask", "gender", "age"), (float(w) for w in head_weights)))

    def forward(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != num_outputs(self.head):
            raise ValueError(f"{self.head} loss needs {num_outputs(self.head)} logits, got {logits.shape[-1]}")
        if self.head == "single":
            return smoothed_focal_ce(logits, cls, self.smoothing, self.gamma)
        targets = head_targets(cls)
        total = logits.new_zeros((), dtype=torch.float32)
        for name, cols in SLICES.items():
            total = total + self.weights[name] * smoothed_focal_ce(logits[:, cols], targets[name], self.smoothing, self.gamma)
        return total

