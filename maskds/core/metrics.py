"""Scores shown everywhere: 18-class macro F1 (the competition metric), per-head macro F1, accuracy."""
from __future__ import annotations

import numpy as np

from maskds.core.labels import HEAD_NAMES, NUM_CLASSES


def split_classes(cls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, gender, age band) arrays of an array of 18-class ids."""
    cls = np.asarray(cls, dtype=np.int64)
    return cls // 6, (cls // 3) % 2, cls % 3


def scores(y_true, y_pred) -> dict[str, float]:
    """macro_f1 (18 classes), mask_f1, gender_f1, age_f1 (macro per head), accuracy, n.

    Macro F1 averages over the labels present in y_true or y_pred (sklearn's rule): a class that is
    neither present nor predicted does not count.
    """
    from sklearn.metrics import f1_score  # lazy: sklearn takes a second to import, and `maskds --help` imports this

    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and equal length, got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise ValueError("cannot score an empty set of predictions")
    tm, tg, ta = split_classes(t)
    pm, pg, pa = split_classes(p)
    f1 = lambda a, b: float(f1_score(a, b, average="macro", zero_division=0))  # noqa: E731
    return {
        "macro_f1": f1(t, p),
        "mask_f1": f1(tm, pm),
        "gender_f1": f1(tg, pg),
        "age_f1": f1(ta, pa),
        "accuracy": float((t == p).mean()),
        "n": int(len(t)),
    }


def selection_score(scores: dict, heads=HEAD_NAMES) -> float:
    """What picks a run's best epoch: the 18-class macro F1, or for a specialist run (some heads) the
    mean macro F1 of its heads (the others are untrained, so the 18 classes say nothing of it)."""
    if set(heads) >= set(HEAD_NAMES):
        return float(scores["macro_f1"])
    return float(np.mean([scores[f"{h}_f1"] for h in heads]))


def confusion(y_true, y_pred) -> np.ndarray:
    """18x18 confusion matrix, rows = truth, columns = prediction."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(NUM_CLASSES)))
