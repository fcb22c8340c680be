"""Torch datasets over the arrow cache: fold split, 18-class labels, lazy decoding, per-sample augmentation seeds."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from maskds.config.plan import FoldModel
from maskds.core import images, memory
from maskds.core.errors import UserError
from maskds.core.labels import (ALL_KNOWN, EXTRA, KNOWN_AGE, KNOWN_BAND, KNOWN_GENDER, KNOWN_INTERVAL, KNOWN_MASK,
                                 PSEUDO, age_band, band_fits, encode)
from maskds.data.cache import load_cache
from maskds.training.draws import ExtraDraw, PersonDraw


def load_train_split(cache: str | Path) -> tuple[datasets.Dataset, dict]:
    """The cache's `train` split with images left as encoded bytes, and the cache's meta."""
    dsd, meta = load_cache(cache)
    if "train" not in dsd:
        raise UserError(f"cache {cache}: has no 'train' split; rebuild it with `maskds build DATA {cache}`")
    return dsd["train"].cast_column("image", datasets.Image(decode=False)), meta


def _label_columns(table: datasets.Dataset, age_thresholds: Sequence[int]) -> tuple[np.ndarray, ...]:
    """mask, gender, age band, age and KNOWN_* bits of every row (-1 where a label is missing: extra
    data without it). A pseudo-labelled row has a competition band in `age_band` and no age: its
    interval of years is known (KNOWN_INTERVAL, for numeric age heads) under any `age_thresholds`, the
    band itself (KNOWN_BAND, for band-based terms) only where the interval fits the training band
    (`band_fits`); its band index is kept in the class id either way (the interval's)."""
    n = len(table)
    mask = np.asarray(table["mask"], dtype=np.int64)
    gender = np.asarray(table["gender"], dtype=np.int64)
    age = np.asarray(table["age"], dtype=np.int64)
    given = np.asarray(table["age_band"], dtype=np.int64) if "age_band" in table.column_names else np.full(n, -1)
    bands = np.array([age_band(int(a), tuple(age_thresholds)) if a >= 0 else b for a, b in zip(age, given)],
                     dtype=np.int64).reshape(n)
    interval = (age < 0) & (given >= 0)
    fits = np.array([band_fits(int(b), tuple(age_thresholds)) for b in np.maximum(given, 0)], dtype=bool).reshape(n)
    known = ((mask >= 0) * KNOWN_MASK + (gender >= 0) * KNOWN_GENDER + (age >= 0) * KNOWN_AGE
             + ((age >= 0) | (interval & fits)) * KNOWN_BAND + interval * KNOWN_INTERVAL)
    if "origin" in table.column_names:
        origin = np.asarray(table["origin"])
        known = known + (origin == "pseudo") * PSEUDO + (origin == "extra") * EXTRA
    return mask, gender, bands, age, known.astype(np.int64)


def class_labels(table: datasets.Dataset, age_thresholds: Sequence[int]) -> np.ndarray:
    """18-class ids of every row; age bands come from the raw age with the training thresholds (a
    missing label counts as its first value: `class_and_age`'s `known` says which are real)."""
    mask, gender, bands, _, _ = _label_columns(table, age_thresholds)
    return encode(np.maximum(mask, 0), np.maximum(gender, 0), np.maximum(bands, 0))


def class_and_age(table: datasets.Dataset, age_thresholds: Sequence[int]) -> np.ndarray:
    """Rows of (18-class id with the given age bands, age in years or -1[, known]): what every loss learns
    from. `known`, the KNOWN_* bits of the labels a row has (`core.labels`), is there only when some row
    lacks a label or is a pseudo label: a fully labelled cache trains with plain means (`MaskLoss`)."""
    mask, gender, bands, age, known = _label_columns(table, age_thresholds)
    cls = encode(np.maximum(mask, 0), np.maximum(gender, 0), np.maximum(bands, 0))
    if (known == ALL_KNOWN).all():
        return np.stack([cls, age], axis=1)
    return np.stack([cls, age, known], axis=1)


def with_known(labels: np.ndarray) -> np.ndarray:
    """(class, age) rows with the `known` column appended (every label known), for per-row label masks."""
    if labels.ndim == 2 and labels.shape[1] == 2:
        return np.concatenate([labels, np.full((len(labels), 1), ALL_KNOWN, dtype=np.int64)], axis=1)
    return labels


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one fold's training and validation images."""
    train: np.ndarray
    val: np.ndarray


def fold_split(table: datasets.Dataset, fold: FoldModel | int, drop_ages: Sequence[int] = ()) -> FoldSplit:
    """Validate `fold` on the rows it validates (the fold plan's), train on the others; `drop_ages` leave
    training only (never validation).
    Rows of fold -1 (extra data, pseudo labels: `data.cache.TRAIN_ONLY_FOLD`) are in every fold's training set."""
    fold = FoldModel.of(fold)
    folds = np.asarray(table["fold"], dtype=np.int64)
    ages = np.asarray(table["age"], dtype=np.int64)
    validated = fold.validation_rows(folds)
    val = np.flatnonzero(validated)
    train = np.flatnonzero(~validated & ~np.isin(ages, np.asarray(list(drop_ages), dtype=np.int64)))
    if len(train) == 0 or (fold.validates and len(val) == 0):
        raise UserError(f"{fold.label}: {len(train)} training and {len(val)} validation images; check folds/drop_ages")
    return FoldSplit(train=train, val=val)


class CachedImages(Dataset):
    """(uint8 image tensor, target) for chosen rows; JPEG bytes are decoded here, inside workers.

    `labels` holds one row per table row: an 18-class id, or a vector such as (class id, age, known)
    (`class_and_age`); batches then carry [B] or [B, k] targets.

    Augmentations are seeded per sample from (seed, epoch, index), not per worker: every sample draws
    its own, each epoch draws anew, and the draw does not depend on which worker or process loads it.
    So workers may persist across epochs (no restart cost), and a resumed run sees exactly the
    augmentations of an uninterrupted one. The epoch sits in shared memory so that persistent
    workers see `set_epoch`.
    """

    def __init__(self, table: datasets.Dataset, rows: np.ndarray, labels: np.ndarray, transform: Callable,
                 seed: int | None = 0, person_draw: PersonDraw | None = None, extra_draw: ExtraDraw | None = None):
        self.images = table.select_columns(["image"])
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)[self.rows]
        self.transform = transform
        self.seed = seed  # None: a deterministic (eval) transform, nothing to seed
        self.person_draw = person_draw  # person-level sampling: labels change with the epoch
        self.extra_draw = extra_draw    # extra_per_epoch: which extra rows the last samples read changes too
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentations; call it before `iter(loader)` (workers prefetch at once)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.rows) if self.extra_draw is None else len(self.extra_draw)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch with one arrow read for all its bytes (the DataLoader prefers this when batching)."""
        epoch = int(self._epoch)
        if self.extra_draw is not None:
            indices = [self.extra_draw.position(i, epoch) for i in indices]
        column = self.images[[int(self.rows[i]) for i in indices]]["image"]
        return [self._item(i, cell["bytes"], epoch) for i, cell in zip(indices, column)]

    def _item(self, i: int, raw: bytes, epoch: int) -> tuple[torch.Tensor, int]:
        """Row position i's sample (augmentations seeded by the position: a drawn extra photo gets its own)."""
        if self.seed is not None:
            seed_sample(self.transform, self.seed, epoch, i)
        image = self.transform(image=images.decode_cached(raw))["image"]
        if self.labels.ndim == 1:
            return image, int(self.labels[i])
        row = self.labels[i] if self.person_draw is None else self.person_draw.labels(self.labels[i], i, epoch)
        return image, torch.from_numpy(row)


def seed_sample(transform, seed: int, epoch: int, index: int) -> None:
    """Give an albumentations Compose (and, through it, its transforms) RNGs for one sample of one epoch.

    One shared generator pair, set with `set_random_state`: `set_random_seed` would build a pair per
    transform, 5x slower, and give every transform the same stream.
    """
    if hasattr(transform, "set_random_state"):
        rng = np.random.default_rng([seed, epoch, index])
        transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int, device: torch.device) -> DataLoader:
    """DataLoader with persistent workers; training shuffles and drops the last partial batch. For a model on
    the CPU the workers decode at the lowest priority (`memory.background_decoder`); pinned memory for CUDA."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) >= batch_size,  # a 1-image batch breaks BatchNorm
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        # Seeds are per sample (CachedImages), so workers need no restart per epoch to draw anew.
        persistent_workers=num_workers > 0,
        worker_init_fn=memory.loader_worker_init(device.type == "cpu"),
        # Its own generator: starting workers (once, when they persist) then never draws from the
        # global torch RNG that dropout uses, so a resumed run matches an uninterrupted one.
        generator=torch.Generator().manual_seed(0),
    )
