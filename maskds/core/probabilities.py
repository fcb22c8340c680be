"""Model outputs to probabilities: what each head type's logits mean, and per-head and 18-class probabilities."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from maskds.core.labels import DEFAULT_AGE_THRESHOLDS, HEAD_SIZES, NUM_CLASSES

# Probabilities of a set of images: "mask" [N,3], "gender" [N,2], "age" [N,3] (bands), "class" [N,18];
# as a table (probabilities files, oof.csv) one column per entry, e.g. age_p2, class_p17.
Probs = dict[str, np.ndarray]
KEYS = ("mask", "gender", "age", "class")
WIDTHS = {**HEAD_SIZES, "class": NUM_CLASSES}
PROB_COLUMNS = [f"{k}_p{i}" for k in KEYS for i in range(WIDTHS[k])]

HEAD_TYPES = ("multihead", "single")
AGE_HEADS = ("bands", "regression", "distribution", "soft_bands")
# Age heads whose logits are the three bands (a softmax of 3): soft_bands differs from bands only in its
# training targets (`training.losses.soft_band_targets`), so everything after training treats it as bands.
BAND_HEADS = ("bands", "soft_bands")
# soft_bands: the default width (sd, years) of the Gaussian around a known age whose mass in each band is
# the target (`age_soft_sigma`): 29 -> (0.58, 0.42, 0), 45 -> (0, 1, 0) at the competition's bands.
AGE_SOFT_SIGMA = 2.5
# Column slices of a multihead model's mask and gender logits; the age logits follow (`HeadSpec.slices`).
SLICES = {"mask": slice(0, 3), "gender": slice(3, 5), "age": slice(5, 8)}
# The distribution head: one bin per year of age in AGE_RANGE (ages outside are clipped onto its ends).
AGE_RANGE = (10, 90)
AGE_BINS = AGE_RANGE[1] - AGE_RANGE[0] + 1
# The regression head predicts (age - AGE_CENTER) / AGE_SCALE; its band probabilities assume a normal
# error of AGE_SIGMA years around the prediction.
AGE_CENTER, AGE_SCALE, AGE_SIGMA = 40.0, 20.0, 5.0


@dataclass(frozen=True)
class HeadSpec:
    """What a model's logits hold. `head`: multihead (mask 3 | gender 2 | age) or single (18-way).
    `age_head` (multihead only): bands (3 logits), soft_bands (the same 3 logits, trained on soft targets
    from the age in years), regression (1: the age as a number) or distribution (a softmax over the ages
    of AGE_RANGE). Numeric ages become band probabilities split at `age_thresholds` (ages are whole
    years: band 1 is low..high-1). `age_soft_sigma`: the width in years of soft_bands' targets (training
    only; not part of what the logits mean, so specs compare without it)."""

    head: str = "multihead"
    age_head: str = "bands"
    age_thresholds: tuple[int, int] = DEFAULT_AGE_THRESHOLDS
    age_soft_sigma: float = field(default=AGE_SOFT_SIGMA, compare=False)

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise ValueError(f"head must be one of {HEAD_TYPES}, got {self.head!r}")
        if self.age_head not in AGE_HEADS:
            raise ValueError(f"age_head must be one of {AGE_HEADS}, got {self.age_head!r}")
        if self.head == "single" and self.age_head != "bands":
            raise ValueError(f"age_head {self.age_head!r} needs head 'multihead' (single is one 18-way softmax)")
        if not self.age_soft_sigma > 0:
            raise ValueError(f"age_soft_sigma must be > 0 years, got {self.age_soft_sigma}")
        object.__setattr__(self, "age_thresholds", tuple(int(t) for t in self.age_thresholds))

    @property
    def age_width(self) -> int:
        return {"bands": 3, "soft_bands": 3, "regression": 1, "distribution": AGE_BINS}[self.age_head]

    @property
    def num_outputs(self) -> int:
        """Width of the logits tensor a model with these heads returns."""
        return NUM_CLASSES if self.head == "single" else 5 + self.age_width

    def slices(self) -> dict[str, slice]:
        """Column slices of the mask, gender and age logits (multihead)."""
        return {"mask": SLICES["mask"], "gender": SLICES["gender"], "age": slice(5, 5 + self.age_width)}

    def check(self, logits: torch.Tensor) -> None:
        if logits.shape[-1] != self.num_outputs:
            raise ValueError(f"{self.head}/{self.age_head} logits need {self.num_outputs} columns, "
                             f"got {logits.shape[-1]}")


def as_spec(head: str | HeadSpec) -> HeadSpec:
    """A HeadSpec; a head type name ("multihead", "single") is shorthand for its default spec."""
    return HeadSpec(head) if isinstance(head, str) else head


def class_probs_from_heads(mask: torch.Tensor, gender: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
    """18-class probabilities as the product of the head probabilities (class = m*6 + g*3 + a)."""
    p = mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]
    return p.reshape(p.shape[0], NUM_CLASSES)


def heads_from_class_probs(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Marginal head probabilities of 18-class probabilities."""
    cube = p.reshape(p.shape[0], 3, 2, 3)
    return {"mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2))}


def age_band_probs(age_logits: torch.Tensor, spec: HeadSpec) -> torch.Tensor:
    """[N, 3] band probabilities of the age logits of any age head (bands, soft_bands: their softmax)."""
    if spec.age_head in BAND_HEADS:
        return age_logits.softmax(-1)
    low, high = (t - 0.5 for t in spec.age_thresholds)  # whole years: 29 is < 30, 30 is not
    if spec.age_head == "regression":
        mu = AGE_CENTER + AGE_SCALE * age_logits[:, 0]
        cdf = lambda t: 0.5 * (1 + torch.erf((t - mu) / (AGE_SIGMA * math.sqrt(2))))  # noqa: E731
        below, above = cdf(low), 1 - cdf(high)
        return torch.stack([below, (1 - below - above).clamp_min(0), above], dim=-1)
    p = age_logits.softmax(-1)
    ages = torch.arange(AGE_RANGE[0], AGE_RANGE[1] + 1, device=p.device, dtype=p.dtype)
    return torch.stack([p[:, ages < low].sum(-1), p[:, (ages > low) & (ages < high)].sum(-1),
                        p[:, ages > high].sum(-1)], dim=-1)


def expected_age(age_logits: torch.Tensor, spec: HeadSpec) -> torch.Tensor | None:
    """The predicted age in years of a numeric age head (None for bands and soft_bands)."""
    if spec.age_head == "regression":
        return AGE_CENTER + AGE_SCALE * age_logits[:, 0].float()
    if spec.age_head == "distribution":
        ages = torch.arange(AGE_RANGE[0], AGE_RANGE[1] + 1, device=age_logits.device, dtype=torch.float32)
        return age_logits.float().softmax(-1) @ ages
    return None


def probabilities(logits: torch.Tensor, spec: str | HeadSpec) -> dict[str, torch.Tensor]:
    """Probabilities {'mask','gender','age','class'} of a model's logits.

    multihead: each head's probabilities (age bands from any age head), class = their product.
    single: 18-way softmax, heads = marginals.
    """
    spec = as_spec(spec)
    spec.check(logits)
    logits = logits.float()
    if spec.head == "multihead":
        cols = spec.slices()
        out = {"mask": logits[:, cols["mask"]].softmax(-1), "gender": logits[:, cols["gender"]].softmax(-1),
               "age": age_band_probs(logits[:, cols["age"]], spec)}
        out["class"] = class_probs_from_heads(out["mask"], out["gender"], out["age"])
        return out
    p = logits.softmax(-1)
    return {**heads_from_class_probs(p), "class": p}


def to_frame(image_ids, probs: Probs) -> pd.DataFrame:
    """The probabilities table: ImageID, mask_p0..2, gender_p0..1, age_p0..2, class_p0..17."""
    cols = {"ImageID": list(image_ids)}
    for k in KEYS:
        for i in range(WIDTHS[k]):
            cols[f"{k}_p{i}"] = probs[k][:, i]
    return pd.DataFrame(cols)


def probs_from_frame(df: pd.DataFrame) -> Probs:
    """The probabilities of a table with the PROB_COLUMNS, in its row order."""
    return {k: df[[f"{k}_p{i}" for i in range(WIDTHS[k])]].to_numpy(np.float64) for k in KEYS}
