"""Torch datasets over the arrow cache: fold split, 18-class labels, lazy decoding, seeded workers."""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import images
from .errors import UserError
from .labels import age_band, encode


def load_train_split(cache: str | Path) -> tuple[datasets.Dataset, dict]:
    """The cache's `train` split with images left as encoded bytes, and the cache's meta."""
    from .cache import load_cache  # the data side owns the format; it raises UserError when missing

    dsd, meta = load_cache(cache)
    if "train" not in dsd:
        raise UserError(f"cache {cache}: has no 'train' split; rebuild it with `maskds build DATA {cache}`")
    return dsd["train"].cast_column("image", datasets.Image(decode=False)), meta


def class_labels(table: datasets.Dataset, age_thresholds: Sequence[int]) -> np.ndarray:
    """18-class ids of every row; age bands come from the raw age with the training thresholds."""
    mask = np.asarray(table["mask"], dtype=np.int64)
    gender = np.asarray(table["gender"], dtype=np.int64)
    bands = np.array([age_band(int(a), tuple(age_thresholds)) for a in table["age"]], dtype=np.int64)
    return encode(mask, gender, bands)


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one fold's training and validation images."""
    train: np.ndarray
    val: np.ndarray


def fold_split(table: datasets.Dataset, fold: int, drop_ages: Sequence[int] = ()) -> FoldSplit:
    """Validate on fold `fold`, train on the others; `drop_ages` leave training only (never validation)."""
    folds = np.asarray(table["fold"], dtype=np.int64)
    ages = np.asarray(table["age"], dtype=np.int64)
    val = np.flatnonzero(folds == fold)
    keep = (folds != fold) & ~np.isin(ages, np.asarray(list(drop_ages), dtype=np.int64))
    train = np.flatnonzero(keep)
    if len(val) == 0 or len(train) == 0:
        raise UserError(f"fold {fold}: {len(train)} training and {len(val)} validation images; check folds/drop_ages")
    return FoldSplit(train=train, val=val)


class CachedImages(Dataset):
    """(image tensor, 18-class id) for chosen rows; JPEG bytes are decoded here, inside workers."""

    def __init__(self, table: datasets.Dataset, rows: np.ndarray, labels: np.ndarray, transform: Callable):
        self.images = table.select_columns(["image"])
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)[self.rows]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raw = self.images[int(self.rows[i])]["image"]["bytes"]
        image = self.transform(image=images.decode_cached(raw))["image"]
        return image, int(self.labels[i])


def seed_augmentations(dataset: Dataset, seed: int) -> None:
    """Seed python, numpy and the dataset's albumentations Compose (which keeps its own RNG)."""
    seed = seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader worker_init_fn: a seed per worker, per epoch and per process.

    `torch.initial_seed()` in a worker is the loader's base seed (drawn anew from the main
    process's torch RNG at every epoch) + worker_id; `rank` keeps processes apart.
    """
    info = torch.utils.data.get_worker_info()
    seed_augmentations(info.dataset, torch.initial_seed() + 1_000_003 * rank)


def seed_main_process_epoch(dataset: Dataset, rank: int) -> None:
    """With num_workers=0 no worker_init_fn runs: draw the epoch's seed from torch's RNG here instead."""
    base = int(torch.empty((), dtype=torch.int64).random_().item())
    seed_augmentations(dataset, base + 1_000_003 * rank)


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int, pin_memory: bool,
                rank: int = 0) -> DataLoader:
    """DataLoader with per-worker seeding; training shuffles and drops the last partial batch."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) >= batch_size,  # a 1-image batch breaks BatchNorm
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=functools.partial(seed_worker, rank=rank),
        persistent_workers=False,  # workers must restart each epoch to draw new seeds
    )
