"""Training loss: per-head (multihead, with a bands, regression or distribution age head) or 18-way, CE or
focal, and/or a soft macro F1 over the 18 classes."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.labels import CENSORED_AGE, HEAD_NAMES
from ..core.probabilities import AGE_CENTER, AGE_RANGE, AGE_SCALE, AGE_SIGMA, HeadSpec, as_spec, probabilities

LOSS_KINDS = ("ce", "focal", "soft_f1", "ce+soft_f1", "focal+soft_f1")
AGE_TARGET_SIGMA = 3.0  # years: the width of the distribution head's target around the true age


def head_targets(cls: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mask, gender and age-band targets of 18-class ids (class = mask*6 + gender*3 + band)."""
    return {"mask": cls // 6, "gender": (cls // 3) % 2, "age": cls % 3}


def smoothed_focal_ce(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0, gamma: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy with label smoothing, times (1 - p_true)^gamma when gamma > 0 (focal loss).

    With gamma == 0 it is `F.cross_entropy(logits, target, label_smoothing=smoothing)`: one fused
    kernel instead of five.
    """
    if gamma == 0:
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    per_sample = (1.0 - smoothing) * nll - smoothing * logp.mean(dim=-1)
    if gamma > 0:
        p_true = torch.exp(-nll)
        per_sample = (1.0 - p_true).pow(gamma) * per_sample
    return per_sample.mean()


def age_loss(age_logits: torch.Tensor, age: torch.Tensor, spec: HeadSpec, band: torch.Tensor,
             smoothing: float, gamma: float) -> torch.Tensor:
    """The age head's loss: CE/focal over bands, Huber on the scaled age (regression), or cross-entropy
    against a Gaussian of AGE_TARGET_SIGMA years around the true age (distribution).

    CENSORED_AGE means "that age or older" (the data records everyone 60+ as 60): regression is then
    penalised only below it plus AGE_SIGMA (its band probabilities assume that error), and the
    distribution's target keeps only the ages from it up. Without
    that, a perfect model would give a recorded 60 about half its mass below 60: the >= 60 band, the
    rarest class, would be under-predicted.
    """
    if spec.age_head == "bands":
        return smoothed_focal_ce(age_logits, band, smoothing, gamma)
    age = age.float()
    censored = (age == CENSORED_AGE)[:, None]
    if spec.age_head == "regression":
        target = (torch.where(censored[:, 0], age + AGE_SIGMA, age) - AGE_CENTER) / AGE_SCALE
        pred = age_logits[:, 0].float()
        pred = torch.where(censored[:, 0], torch.minimum(pred, target), pred)  # above a censored age: no loss
        return F.smooth_l1_loss(pred, target, beta=2.0 / AGE_SCALE)  # quadratic within 2 years
    ages = torch.arange(AGE_RANGE[0], AGE_RANGE[1] + 1, device=age_logits.device, dtype=torch.float32)
    centre = age.clamp(*AGE_RANGE)[:, None]
    logit = -0.5 * ((ages[None, :] - centre) / AGE_TARGET_SIGMA) ** 2
    logit = logit.masked_fill(censored & (ages[None, :] < centre), float("-inf"))
    target = torch.softmax(logit, dim=-1)
    return -(target * F.log_softmax(age_logits.float(), dim=-1)).sum(-1).mean()


def soft_macro_f1_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - the batch's macro F1 over all classes, with probabilities in place of 0/1 predictions.

    Per class c: tp = sum p_c over its images, fp = sum p_c over the others, fn = sum (1 - p_c) over
    its images, F1 = 2tp / (2tp + fp + fn). Macro F1 weighs every class alike, as the competition does,
    so the rare classes pull as hard as the common ones. A class with no image in the batch scores 0
    whatever is predicted (no gradient): over batches, every class counts.
    """
    onehot = F.one_hot(target, probs.shape[1]).to(probs.dtype)
    tp = (probs * onehot).sum(0)
    fp = (probs * (1 - onehot)).sum(0)
    fn = ((1 - probs) * onehot).sum(0)
    return 1 - (2 * tp / (2 * tp + fp + fn + 1e-7)).mean()


class MaskLoss(nn.Module):
    """Loss of a model's logits against targets: 18-class ids [B], or [B, 2] rows of (class id, age).

    multihead: weighted sum of the mask (3), gender (2) and age heads' losses, the mask and gender
    targets decoded from the class id, the age head's from the band (bands) or the age in years
    (regression, distribution: these need the ages). single: one 18-way loss. Kinds with `soft_f1`
    add (or, alone, use) `soft_f1_weight` x `soft_macro_f1_loss` of the 18-class probabilities.
    `heads`: the heads that get a loss (a specialist run learns some of them; the others' logits are
    left untrained).
    """

    def __init__(
        self,
        head: str | HeadSpec,
        kind: str = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        head_weights: Sequence[float] = (1.0, 1.0, 1.0),
        soft_f1_weight: float = 1.0,
        heads: Sequence[str] = HEAD_NAMES,
    ):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {kind!r}")
        self.per_head = kind != "soft_f1"
        self.soft_f1 = float(soft_f1_weight) if kind.endswith("soft_f1") else 0.0
        self.spec = as_spec(head)
        self.smoothing = float(label_smoothing)
        self.gamma = float(focal_gamma) if kind == "focal" else 0.0
        self.weights = dict(zip(HEAD_NAMES, (float(w) for w in head_weights)))
        self.heads = tuple(h for h in HEAD_NAMES if h in heads)  # a specialist: the other heads get no loss
        if self.spec.head == "single" and len(self.heads) < 3:
            raise ValueError(f"heads {list(heads)}: a single 18-way head learns every head")

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.spec.check(logits)
        cls = y[:, 0] if y.ndim == 2 else y
        soft = 0.0
        if self.soft_f1:
            soft = self.soft_f1 * soft_macro_f1_loss(probabilities(logits, self.spec)["class"], cls)
        return soft + self._per_head(logits, y) if self.per_head else soft

    def _per_head(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cls, age = (y[:, 0], y[:, 1]) if y.ndim == 2 else (y, None)
        if self.spec.head == "single":
            return smoothed_focal_ce(logits, cls, self.smoothing, self.gamma)
        if age is None and self.spec.age_head != "bands":
            raise ValueError(f"age_head {self.spec.age_head!r} needs (class, age) targets")
        targets, cols = head_targets(cls), self.spec.slices()
        total = sum(self.weights[k] * smoothed_focal_ce(logits[:, cols[k]], targets[k], self.smoothing, self.gamma)
                    for k in ("mask", "gender") if k in self.heads)
        if "age" not in self.heads:
            return total
        return total + self.weights["age"] * age_loss(logits[:, cols["age"]], age, self.spec, targets["age"],
                                                      self.smoothing, self.gamma)
