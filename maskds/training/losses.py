"""Training loss: per-head (multihead, with a bands, soft_bands, regression or distribution age head) or 18-way,
CE or focal, and/or a soft macro F1 over the 18 classes."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maskds.config.checks import LOSS_KINDS
from maskds.core.labels import (
    CENSORED_AGE,
    DEFAULT_AGE_THRESHOLDS,
    EXTRA,
    HEAD_NAMES,
    KNOWN_AGE,
    KNOWN_BAND,
    KNOWN_GENDER,
    KNOWN_INTERVAL,
    KNOWN_MASK,
    PSEUDO,
)
from maskds.core.probabilities import (
    AGE_CENTER,
    AGE_RANGE,
    AGE_SCALE,
    AGE_SIGMA,
    BAND_HEADS,
    HeadSpec,
    as_spec,
    probabilities,
)

AGE_TARGET_SIGMA = 3.0  # years: the width of the distribution head's target around the true age


def head_targets(cls: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mask, gender and age-band targets of 18-class ids (class = mask*6 + gender*3 + band)."""
    return {"mask": cls // 6, "gender": (cls // 3) % 2, "age": cls % 3}


def per_sample_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0,
                  gamma: float = 0.0) -> torch.Tensor:
    """[B] cross-entropies with label smoothing, times (1 - p_true)^gamma when gamma > 0 (focal loss).

    With gamma == 0 it is `F.cross_entropy(logits, target, label_smoothing=smoothing, reduction="none")`:
    one fused kernel instead of five.
    """
    if gamma == 0:
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing, reduction="none")
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    per_sample = (1.0 - smoothing) * nll - smoothing * logp.mean(dim=-1)
    return (1.0 - torch.exp(-nll)).pow(gamma) * per_sample


def per_sample_soft_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0,
                        gamma: float = 0.0) -> torch.Tensor:
    """[B] cross-entropies against target distributions [B, K] (rows summing to 1), smoothed toward the
    uniform as `F.cross_entropy` smooths them, times (1 - p_t)^gamma with p_t = sum_k target_k p_k (the
    target's expected probability) when gamma > 0. A one-hot target gives exactly `per_sample_ce`."""
    if gamma == 0:
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing, reduction="none")
    logp = F.log_softmax(logits.float(), dim=-1)
    smoothed = (1.0 - smoothing) * target + smoothing / logits.shape[-1]
    p_t = (target * logp.exp()).sum(-1)
    return (1.0 - p_t).clamp_min(0).pow(gamma) * -(smoothed * logp).sum(-1)


def soft_band_targets(age: torch.Tensor, band: torch.Tensor, thresholds: Sequence[int], sigma: float,
                      has_age: torch.Tensor) -> torch.Tensor:
    """[B, 3] targets of the soft_bands head: where the age in years is known (`has_age`), the mass of each
    band, split at `thresholds` (whole years: 29 is below 30), under a Gaussian of `sigma` years around it,
    so 29 is nearly 30-59 and 45 surely is; elsewhere the one-hot `band`. A CENSORED_AGE (the data's "60
    or older") keeps only the ages from it up, as the numeric heads read it: its target is the top band."""
    edges = torch.tensor([t - 0.5 for t in thresholds], device=age.device, dtype=torch.float32)
    centre = age.float()[:, None]
    cdf = 0.5 * (1 + torch.erf((edges[None, :] - centre) / (sigma * math.sqrt(2))))  # [B, 2]: below each edge
    floor = torch.where(age == CENSORED_AGE, 0.5 * (1 + math.erf(-0.5 / (sigma * math.sqrt(2)))), 0.0)[:, None]
    cdf = torch.cat([floor, cdf.maximum(floor), torch.ones_like(floor)], dim=1)  # censored: nothing below it
    soft = (cdf[:, 1:] - cdf[:, :-1]) / (1 - floor)
    return torch.where(has_age[:, None], soft, F.one_hot(band, 3).float())


def smoothed_focal_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0,
                      gamma: float = 0.0) -> torch.Tensor:
    """The mean of `per_sample_ce` (gamma 0: `F.cross_entropy`'s own mean reduction, one fused kernel)."""
    if gamma == 0:
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
    return per_sample_ce(logits, target, smoothing, gamma).mean()


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """sum(w x v) / sum(w); 0 (with the graph kept) when no row has weight: no host sync on a GPU.
    No weights (every row has every label): the plain mean."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def _band_bounds(band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[low, high) in years of competition age bands (a pseudo label knows the band, not the age): exact
    under any training thresholds."""
    edges = torch.tensor([0.0, *DEFAULT_AGE_THRESHOLDS, float("inf")], device=band.device)
    return edges[band], edges[band + 1]


def age_losses(age_logits: torch.Tensor, age: torch.Tensor | None, spec: HeadSpec, band: torch.Tensor,
               smoothing: float, gamma: float, has_age: torch.Tensor | None = None) -> torch.Tensor:
    """[B] losses of the age head: CE/focal over bands, CE/focal against `soft_band_targets` (soft_bands),
    Huber on the scaled age (regression), or cross-entropy against a Gaussian of AGE_TARGET_SIGMA years
    around the true age (distribution).

    CENSORED_AGE means "that age or older" (the data records everyone 60+ as 60): regression is then
    penalised only below it plus AGE_SIGMA (its band probabilities assume that error), and the
    distribution's target keeps only the ages from it up. Without that, a perfect model would give a
    recorded 60 about half its mass below 60: the >= 60 band, the rarest class, would be under-predicted.
    Rows where `has_age` is False know only the (competition) band: regression is penalised outside
    it, the distribution by -log of its mass inside it, soft_bands by CE/focal on the hard `band`.
    """
    if spec.age_head == "bands":
        return per_sample_ce(age_logits, band, smoothing, gamma)
    has_age = torch.ones_like(age, dtype=torch.bool) if has_age is None else has_age
    if spec.age_head == "soft_bands":
        target = soft_band_targets(age, band, spec.age_thresholds, spec.age_soft_sigma, has_age & (age >= 0))
        return per_sample_soft_ce(age_logits, target, smoothing, gamma)
    age = age.float()
    low, high = _band_bounds(band)
    censored = (age == CENSORED_AGE)[:, None]
    if spec.age_head == "regression":
        target = (torch.where(censored[:, 0], age + AGE_SIGMA, age) - AGE_CENTER) / AGE_SCALE
        pred = age_logits[:, 0].float()
        exact = torch.where(censored[:, 0], torch.minimum(pred, target), pred)  # above a censored age: no loss
        inside = pred.detach().clamp((low - AGE_CENTER) / AGE_SCALE, (high - AGE_CENTER) / AGE_SCALE)
        pred = torch.where(has_age, exact, pred)
        target = torch.where(has_age, target, inside)
        return F.smooth_l1_loss(pred, target, beta=2.0 / AGE_SCALE, reduction="none")  # quadratic within 2 years
    ages = torch.arange(AGE_RANGE[0], AGE_RANGE[1] + 1, device=age_logits.device, dtype=torch.float32)
    centre = age.clamp(*AGE_RANGE)[:, None]
    logit = -0.5 * ((ages[None, :] - centre) / AGE_TARGET_SIGMA) ** 2
    logit = logit.masked_fill(censored & (ages[None, :] < centre), float("-inf"))
    logp = F.log_softmax(age_logits.float(), dim=-1)
    exact = -(torch.softmax(logit, dim=-1) * logp).sum(-1)
    in_band = (ages[None, :] >= low[:, None]) & (ages[None, :] < high[:, None])
    return torch.where(has_age, exact, -torch.logsumexp(logp.masked_fill(~in_band, float("-inf")), dim=-1))


def soft_macro_f1_loss(probs: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 - the batch's macro F1 over all classes, with probabilities in place of 0/1 predictions.

    Per class c: tp = sum p_c over its images, fp = sum p_c over the others, fn = sum (1 - p_c) over
    its images, F1 = 2tp / (2tp + fp + fn). Macro F1 weighs every class alike, as the competition does,
    so the rare classes pull as hard as the common ones. A class with no image in the batch scores 0
    whatever is predicted (no gradient): over batches, every class counts. `weights`: per row (rows
    without all three labels weigh 0).
    """
    onehot = F.one_hot(target, probs.shape[1]).to(probs.dtype)
    w = torch.ones_like(probs[:, :1]) if weights is None else weights[:, None].to(probs.dtype)
    tp = (w * probs * onehot).sum(0)
    fp = (w * probs * (1 - onehot)).sum(0)
    fn = (w * (1 - probs) * onehot).sum(0)
    return 1 - (2 * tp / (2 * tp + fp + fn + 1e-7)).mean()


def label_weights(known: torch.Tensor | None, pseudo_weight: float,
                  extra_weight: float = 1.0) -> dict[str, torch.Tensor | None]:
    """Per-row weights of each loss term: 0 where the row lacks the label the term needs, `pseudo_weight`
    on pseudo-labelled rows, `extra_weight` on `--extra` rows, else 1 (`known`: the KNOWN_* bits of each
    row; None: every label known, and every term a plain mean, with the fused kernels of a fully labelled
    cache)."""
    if known is None:
        return dict.fromkeys(("mask", "gender", "band", "age", "class"))
    base = torch.where((known & PSEUDO) != 0, float(pseudo_weight), 1.0)
    base = torch.where((known & EXTRA) != 0, base * float(extra_weight), base)

    def has(bits: int, every: bool = True) -> torch.Tensor:
        hit = (known & bits) == bits if every else (known & bits) != 0
        return hit.float() * base

    return {"mask": has(KNOWN_MASK), "gender": has(KNOWN_GENDER), "band": has(KNOWN_BAND),
            "age": has(KNOWN_BAND | KNOWN_AGE | KNOWN_INTERVAL, every=False),  # numeric heads: an interval will do
            "class": has(KNOWN_MASK | KNOWN_GENDER | KNOWN_BAND)}


class MaskLoss(nn.Module):
    """Loss of a model's logits against targets: 18-class ids [B], [B, 2] rows of (class id, age), or
    [B, 3] rows of (class id, age, known): `known`'s KNOWN_* bits say which labels the row has (each
    term is averaged over the rows that have its label), PSEUDO marks a pseudo label (weighed
    `pseudo_weight`), EXTRA a row of `--extra` data (weighed `extra_weight`).

    multihead: weighted sum of the mask (3), gender (2) and age heads' losses, the mask and gender
    targets decoded from the class id, the age head's from the band (bands) or the age in years
    (soft_bands, regression, distribution: these need the ages; soft_bands falls back to the band on
    rows without one, and weighs its rows as bands does). single: one 18-way loss. Kinds with `soft_f1`
    add (or, alone, use) `soft_f1_weight` x `soft_macro_f1_loss` of the 18-class probabilities (on the
    hard classes, whatever the age head).
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
        pseudo_weight: float = 1.0,
        extra_weight: float = 1.0,
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
        self.pseudo_weight = float(pseudo_weight)
        self.extra_weight = float(extra_weight)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.spec.check(logits)
        cls = y[:, 0] if y.ndim == 2 else y
        known = y[:, 2] if y.ndim == 2 and y.shape[1] > 2 else None
        w = label_weights(known, self.pseudo_weight, self.extra_weight)
        soft = 0.0
        if self.soft_f1:
            soft = self.soft_f1 * soft_macro_f1_loss(probabilities(logits, self.spec)["class"], cls, w["class"])
        return soft + self._per_head(logits, y, w, known) if self.per_head else soft

    def _per_head(self, logits: torch.Tensor, y: torch.Tensor, w: dict, known: torch.Tensor | None) -> torch.Tensor:
        cls, age = (y[:, 0], y[:, 1]) if y.ndim == 2 else (y, None)
        if self.spec.head == "single":
            return self._ce(logits, cls, w["class"])
        if age is None and self.spec.age_head != "bands":
            raise ValueError(f"age_head {self.spec.age_head!r} needs (class, age) targets")
        targets, cols = head_targets(cls), self.spec.slices()
        total = sum(self.weights[k] * self._ce(logits[:, cols[k]], targets[k], w[k])
                    for k in ("mask", "gender") if k in self.heads)
        if "age" not in self.heads:
            return total
        if self.spec.age_head == "bands":
            return total + self.weights["age"] * self._ce(logits[:, cols["age"]], targets["age"], w["band"])
        has_age = None if known is None else (known & KNOWN_AGE) != 0
        per = age_losses(logits[:, cols["age"]], age, self.spec, targets["age"], self.smoothing, self.gamma, has_age)
        rows = w["band"] if self.spec.age_head in BAND_HEADS else w["age"]  # soft_bands: as bands (an age has a band)
        return total + self.weights["age"] * weighted_mean(per, rows)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is None:
            return smoothed_focal_ce(logits, target, self.smoothing, self.gamma)
        return weighted_mean(per_sample_ce(logits, target, self.smoothing, self.gamma), weights)
