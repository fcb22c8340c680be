"""Shared pytest fixtures: a tiny synthetic raw data set and its cache, built once per test session.

- `synth_data` (session): Path to a raw data root written by `maskds.synth.generate.synthesize` with
  SYNTH_PERSONS train persons (7 images each, with the layout quirks: a .jpeg, a .png, `._` junk,
  an EXIF-rotated image, a non-Asian race) and SYNTH_EVAL_PERSONS eval persons, seed 0. It holds
  train/train.csv, train/images/..., eval/info.csv, eval/images/... and eval/answers.csv (the truth).
  Treat it as read-only: copy it (shutil.copytree) before changing anything.
- `tiny_cache` (session): Path to the cache `maskds.data.cache.build_cache` writes from `synth_data` with
  size TINY_SIZE (H, W), TINY_FOLDS folds, seed 42, default corrections. Splits `train` and `eval`
  (schema in docs/ARCHITECTURE.md). Read-only too; load it with `maskds.data.cache.load_cache`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SYNTH_PERSONS = 24
SYNTH_EVAL_PERSONS = 8
TINY_SIZE = (64, 48)
TINY_FOLDS = 3


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """Raw layout with SYNTH_PERSONS train and SYNTH_EVAL_PERSONS eval persons (seed 0), read-only."""
    from maskds.synth.generate import synthesize

    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, persons=SYNTH_PERSONS, eval_persons=SYNTH_EVAL_PERSONS, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_cache(synth_data, tmp_path_factory) -> Path:
    """Cache of `synth_data` at TINY_SIZE with TINY_FOLDS folds (seed 42), read-only."""
    from maskds.data.cache import build_cache

    cache = tmp_path_factory.mktemp("cache") / "cache"
    build_cache(synth_data, cache, size_hw=TINY_SIZE, folds=TINY_FOLDS, seed=42,
                corrections="default", num_proc=1)
    return cache
