"""Person folds: one fold per person, a person's 7 images together, balanced strata, deterministic."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maskds.core.errors import UserError
from maskds.data.folds import assign_folds, strata


def _table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ages = np.where(rng.random(n) < 0.12, 60, rng.integers(18, 60, n))
    return pd.DataFrame({"person_id": [f"{i:06d}" for i in range(n)],
                         "gender": (rng.random(n) < 0.6).astype(int), "age": ages})


def test_every_person_gets_exactly_one_fold():
    table = _table()
    folds = assign_folds(table, 5, 42)
    assert sorted(folds) == sorted(table["person_id"])
    assert set(folds.values()) == set(range(5))


def test_strata_proportions_per_fold_are_close_to_the_whole():
    table = _table()
    folds = assign_folds(table, 5, 42)
    y = strata(table)
    whole = np.bincount(y, minlength=6) / len(y)
    fold = table["person_id"].map(folds).to_numpy()
    for f in range(5):
        share = np.bincount(y[fold == f], minlength=6) / (fold == f).sum()
        assert np.abs(share - whole).max() < 0.04, (f, share, whole)
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 2


def test_same_seed_same_folds_and_input_order_does_not_matter():
    table = _table()
    a = assign_folds(table, 5, 42)
    assert assign_folds(table.sample(frac=1.0, random_state=3), 5, 42) == a
    assert assign_folds(table, 5, 7) != a


def test_too_many_folds_is_a_user_error():
    with pytest.raises(UserError, match="--folds"):
        assign_folds(_table(4), 5, 0)


def test_cache_keeps_each_persons_images_in_one_fold(tiny_cache):
    from maskds.data.cache import load_cache

    dd, meta = load_cache(tiny_cache)
    train = dd["train"].remove_columns("image").to_pandas()
    per_person = train.groupby("person_id")["fold"].agg(["nunique", "size"])
    assert (per_person["nunique"] == 1).all() and (per_person["size"] == 7).all()
    assert sorted(train["fold"].unique()) == list(range(meta["args"]["folds"]))
