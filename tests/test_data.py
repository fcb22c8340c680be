"""Data tests: labels from raw ages, person-level fold split, lazy decoding, per-worker/per-epoch seeding."""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from maskds import labels
from maskds.data import (CachedImages, class_labels, fold_split, load_train_split, make_loader,
                         seed_main_process_epoch)
from maskds.errors import UserError
from maskds.transforms import eval_transform, train_transform


@pytest.fixture(scope="module")
def table(tiny_cache):
    return load_train_split(tiny_cache)[0]


def test_missing_cache_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        load_train_split(tmp_path / "nowhere")


def test_labels_use_the_training_age_thresholds(table):
    ages = np.asarray(table["age"])
    default, moved = class_labels(table, [30, 60]), class_labels(table, [30, 45])
    for i in range(len(table)):
        m, g = table[i]["mask"], table[i]["gender"]
        assert default[i] == labels.encode(m, g, labels.age_band(int(ages[i]), (30, 60)))
        assert moved[i] == labels.encode(m, g, labels.age_band(int(ages[i]), (30, 45)))
    assert (default != moved).any()  # the cache keeps raw ages, so bands are a training choice


def test_fold_split_is_by_person_and_drops_ages_from_training_only(table):
    persons, ages, folds = np.asarray(table["person_id"]), np.asarray(table["age"]), np.asarray(table["fold"])
    fold = int(folds[ages == 60][0])  # a fold whose validation persons include someone aged 60
    split = fold_split(table, fold, drop_ages=[60])
    assert set(persons[split.train]).isdisjoint(persons[split.val])
    assert (folds[split.val] == fold).all() and len(split.train) + len(split.val) < len(table)
    assert 60 not in set(ages[split.train]) and 60 in set(ages[split.val])
    with pytest.raises(UserError, match="fold 9"):
        fold_split(table, 9)


def test_cached_images_decode_bytes_to_transformed_tensors(table):
    labels_ = class_labels(table, [30, 60])
    ds = CachedImages(table, np.array([0, 5]), labels_, eval_transform([32, 24]))
    x, y = ds[1]
    assert tuple(x.shape) == (3, 32, 24) and y == labels_[5]


class _SameImage(Dataset):
    """One fixed photo, augmented: any difference between items comes from the augmentation RNG."""

    def __init__(self, n=8):
        self.img = np.random.default_rng(0).integers(0, 256, size=(48, 36, 3), dtype=np.uint8)
        self.transform = train_transform([48, 36], "strong")
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(image=self.img)["image"], 0


def _epoch(loader):
    return [x[0] for x, _ in loader]


def test_workers_and_epochs_draw_different_augmentations_and_repeat_under_the_same_seed():
    ds = _SameImage()
    loader = make_loader(ds, batch_size=1, train=False, num_workers=2, pin_memory=False)
    torch.manual_seed(0)
    e0, e1 = _epoch(loader), _epoch(loader)
    assert not torch.equal(e0[0], e0[1])   # items 0 and 1 come from workers 0 and 1
    assert not torch.equal(e0[0], e1[0])   # the same worker, next epoch
    torch.manual_seed(0)                   # what resume restores: the main process's torch RNG
    assert all(torch.equal(a, b) for a, b in zip(e0, _epoch(loader)))


def test_processes_draw_different_augmentations():
    ds = _SameImage(2)
    firsts = []
    for rank in (0, 1):
        torch.manual_seed(0)  # the same seed on every process
        firsts.append(_epoch(make_loader(ds, 1, False, 1, False, rank=rank))[0])
    assert not torch.equal(firsts[0], firsts[1])


def test_without_workers_each_epoch_is_reseeded_from_torch():
    ds = _SameImage(2)
    loader = make_loader(ds, 1, False, 0, False)
    torch.manual_seed(0)
    seed_main_process_epoch(ds, rank=0)
    e0 = _epoch(loader)
    seed_main_process_epoch(ds, rank=0)
    e1 = _epoch(loader)
    torch.manual_seed(0)
    seed_main_process_epoch(ds, rank=0)
    assert not torch.equal(e0[0], e1[0]) and torch.equal(e0[0], _epoch(loader)[0])


def test_training_loader_drops_the_last_partial_batch_and_shuffles(table):
    ds = CachedImages(table, np.arange(10), class_labels(table, [30, 60]), eval_transform([16, 12]))
    loader = make_loader(ds, batch_size=4, train=True, num_workers=0, pin_memory=False)
    assert len(loader) == 2 and isinstance(loader.sampler, torch.utils.data.RandomSampler)
