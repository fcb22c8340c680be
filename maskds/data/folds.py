"""Person-level folds: sklearn's StratifiedGroupKFold stratified on gender x age band, so no person leaks."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from maskds.core import labels
from maskds.core.errors import UserError


def person_table(records) -> pd.DataFrame:
    """One row per person (person_id, gender, age) from image records, in first-seen order."""
    rows = {}
    for r in records:
        rows.setdefault(r.person_id, {"person_id": r.person_id, "gender": r.gender, "age": r.age})
    return pd.DataFrame(list(rows.values()), columns=["person_id", "gender", "age"])


def strata(table: pd.DataFrame, thresholds=labels.DEFAULT_AGE_THRESHOLDS) -> np.ndarray:
    """Stratum of each person: gender * 3 + age band (6 strata)."""
    bands = [labels.age_band(int(a), thresholds) for a in table["age"]]
    return np.asarray(table["gender"], dtype=int) * 3 + np.asarray(bands, dtype=int)


def assign_folds(person_table, k: int, seed: int,
                 thresholds=labels.DEFAULT_AGE_THRESHOLDS) -> dict[str, int]:
    """{person_id: fold in 0..k-1}, stratified on gender x age band; same inputs and seed, same folds.

    `person_table` is a DataFrame (or records pandas turns into one) with columns person_id, gender
    (0/1) and age, one row per person. Persons are sorted by id first so the input order does not matter.
    """
    table = pd.DataFrame(person_table).sort_values("person_id", kind="stable").reset_index(drop=True)
    if table["person_id"].duplicated().any():
        raise ValueError("person_table must hold one row per person")
    if not 2 <= k <= len(table):
        raise UserError(f"--folds must be between 2 and the number of persons ({len(table)}), got {k}")
    groups = np.arange(len(table))  # one row per person: each person is its own group
    # Tiny data sets may have fewer persons per stratum than folds: fall back to coarser strata.
    for y in (strata(table, thresholds), np.asarray(table["gender"], dtype=int), np.zeros(len(table), int)):
        if np.bincount(y).max() >= k:
            break
    if not (y == strata(table, thresholds)).all():
        warnings.warn(f"too few persons per gender x age band for {k} folds: stratifying more coarsely")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds: dict[str, int] = {}
    with warnings.catch_warnings():
        # Strata with fewer persons than folds: sklearn warns, the split is still valid.
        warnings.filterwarnings("ignore", message="The least populated class")
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(table)), y, groups)):
            for i in held_out:
                folds[str(table["person_id"].iloc[i])] = fold
    return folds
