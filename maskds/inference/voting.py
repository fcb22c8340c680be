"""Soft voting: fold x TTA averages within a run, weighted means across runs, and the probabilities file."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from maskds.core.atomic import atomic_path
from maskds.core.errors import UserError
from maskds.core.probabilities import (
    KEYS,
    PROB_COLUMNS,
    Probs,
    class_probs_from_heads,
    heads_from_class_probs,
    probs_from_frame,
)


def combine_folds(members: Sequence[Probs], head: str) -> Probs:
    """One run's probabilities from its folds' probabilities (each already averaged over TTA views).

    Every fold counts equally and every fold saw the same TTA views, so this equals the plain
    average over all (fold, view) pairs.
    - multihead: average each head (mask, gender, age) over folds; class = product of the averaged
      heads (`probabilities.class_probs_from_heads`), never the average of per-fold products.
    - single: average the 18-way class probabilities over folds; heads = their marginals.
    """
    if not members:
        raise ValueError("combine_folds needs at least one fold")
    if head == "multihead":
        avg = {k: np.mean([m[k] for m in members], axis=0) for k in ("mask", "gender", "age")}
        cls = class_probs_from_heads(*(torch.from_numpy(avg[k]) for k in ("mask", "gender", "age")))
        return {**avg, "class": cls.numpy()}
    if head == "single":
        cls = np.mean([m["class"] for m in members], axis=0)
        marg = heads_from_class_probs(torch.from_numpy(cls))
        return {**{k: v.numpy() for k, v in marg.items()}, "class": cls}
    raise ValueError(f"unknown head type {head!r}")


def combine_runs(runs: Sequence[Probs], weights: Sequence[float] | None = None) -> Probs:
    """Ensemble of runs: the weighted mean (weights normalised to sum 1) of each run's probabilities.

    Every column (heads and 18-class) is averaged the same way, so a run may be multihead or
    single; the answer is the argmax of the combined 18-class probabilities (`answers`).
    """
    w = np.ones(len(runs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(runs) or len(runs) == 0:
        raise ValueError(f"need one weight per run: {len(runs)} runs, {len(w)} weights")
    w = w / w.sum()
    return {k: sum(wi * r[k].astype(np.float64) for wi, r in zip(w, runs)) for k in KEYS}


def answers(probs: Probs, weights: np.ndarray | None = None) -> np.ndarray:
    """18-class ids: argmax of the combined class probabilities, times per-class weights when a tuned
    decision is applied (`evaluation.decision`); ties go to the lower id."""
    scores = probs["class"] if weights is None else probs["class"] * np.asarray(weights)[None, :]
    return scores.argmax(axis=1).astype(np.int64)


def read_probs(path: str | Path, image_ids: Sequence[str]) -> Probs:
    """Read a probabilities file written by infer.py, rows reordered to `image_ids`.

    This is how runs predicted separately are ensembled: pass the file as another `--run`.
    """
    p = Path(path)
    try:
        df = pd.read_csv(p, dtype={"ImageID": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"probabilities file {p} is not a readable CSV: {err}") from None
    missing = [c for c in ["ImageID", *PROB_COLUMNS] if c not in df.columns]
    if missing:
        raise UserError(f"probabilities file {p} lacks column(s) {', '.join(missing[:5])}; "
                        "pass a file written by infer.py (--probs)")
    df = df.drop_duplicates("ImageID").set_index("ImageID")
    absent = [i for i in image_ids if i not in df.index]
    if absent or len(df) != len(image_ids):
        raise UserError(f"probabilities file {p} is for other images than info.csv: "
                        f"{len(absent)} ImageID(s) missing (e.g. {', '.join(absent[:5])}), {len(df)} rows "
                        f"for {len(image_ids)} images")
    return probs_from_frame(df.loc[list(image_ids)])


def write_atomic(frame: pd.DataFrame, path: str | Path, **to_csv) -> Path:
    """Write a CSV to a temporary file beside `path`, then rename it: readers never see half a file."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, **to_csv)
    return Path(path)
