"""Model outputs to probabilities: per-head and 18-class, for both head types."""
from __future__ import annotations

import torch

from .labels import HEAD_SIZES, NUM_CLASSES

HEAD_TYPES = ("multihead", "single")
# Column slices of a multihead model's concatenated logits [B, 3 + 2 + 3].
SLICES = {"mask": slice(0, 3), "gender": slice(3, 5), "age": slice(5, 8)}


def num_outputs(head: str) -> int:
    """Width of the logits tensor a model with this head type returns."""
    check_head(head)
    return sum(HEAD_SIZES.values()) if head == "multihead" else NUM_CLASSES


def check_head(head: str) -> None:
    if head not in HEAD_TYPES:
        raise ValueError(f"head must be one of {HEAD_TYPES}, got {head!r}")


def class_probs_from_heads(mask: torch.Tensor, gender: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
    """18-class probabilities as the product of the head probabilities (class = m*6 + g*3 + a)."""
    p = mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]
    return p.reshape(p.shape[0], NUM_CLASSES)


def heads_from_class_probs(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Marginal head probabilities of 18-class probabilities."""
    cube = p.reshape(p.shape[0], 3, 2, 3)
    return {"mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2))}


def probabilities(logits: torch.Tensor, head: str) -> dict[str, torch.Tensor]:
    """Softmax probabilities {'mask','gender','age','class'} of a model's logits.

    multihead: each head's softmax, class = their product. single: 18-way softmax, heads = marginals.
    """
    check_head(head)
    logits = logits.float()
    if logits.shape[-1] != num_outputs(head):
        raise ValueError(f"{head} logits need {num_outputs(head)} columns, got {logits.shape[-1]}")
    if head == "multihead":
        out = {k: logits[:, s].softmax(-1) for k, s in SLICES.items()}
        out["class"] = class_probs_from_heads(out["mask"], out["gender"], out["age"])
        return out
    p = logits.softmax(-1)
    return {**heads_from_class_probs(p), "class": p}
