"""Data tests: labels from raw ages, person-level fold split, lazy decoding, per-sample/per-epoch seeding."""
import numpy as np
import pytest
import torch

from maskds.core import labels
from maskds.core.errors import UserError
from maskds.training.datasets import CachedImages, class_labels, fold_split, load_train_split, make_loader
from maskds.model.transforms import eval_transform, train_transform


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


def _same_image(table, n=8, seed=0):
    """n samples that are all row 0: any difference between them comes from the augmentation RNG."""
    return CachedImages(table, np.zeros(n, dtype=np.int64), class_labels(table, [30, 60]),
                        train_transform([48, 36], "strong"), seed=seed)


def _epoch(ds, num_workers, epoch=None, loader=None):
    if epoch is not None:
        ds.set_epoch(epoch)
    loader = loader or make_loader(ds, batch_size=1, train=False, num_workers=num_workers, device=torch.device("cpu"))
    return [x[0] for x, _ in loader]


def test_samples_workers_and_epochs_draw_different_augmentations(table):
    ds = _same_image(table)
    e0 = _epoch(ds, num_workers=2, epoch=0)
    assert not torch.equal(e0[0], e0[1])  # items 0 and 1, loaded by workers 0 and 1
    assert len({x.numpy().tobytes() for x in e0}) == len(e0)
    e1 = _epoch(ds, num_workers=2, epoch=1)
    assert not any(torch.equal(a, b) for a, b in zip(e0, e1))  # every sample draws anew next epoch
    assert all(torch.equal(a, b) for a, b in zip(e0, _epoch(ds, num_workers=2, epoch=0)))  # and repeats


def test_augmentations_do_not_depend_on_workers_and_persistent_workers_see_the_epoch(table):
    ds = _same_image(table)
    loader = make_loader(ds, batch_size=1, train=False, num_workers=2, device=torch.device("cpu"))
    assert loader.persistent_workers
    _epoch(ds, 2, epoch=0, loader=loader)
    with_workers = _epoch(ds, 2, epoch=1, loader=loader)  # the same (persistent) workers, epoch 1
    in_process = _epoch(ds, 0, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(with_workers, in_process))


def test_the_run_seed_changes_the_augmentations(table):
    a = _epoch(_same_image(table, 2, seed=0), 0, epoch=0)
    b = _epoch(_same_image(table, 2, seed=1), 0, epoch=0)
    assert not torch.equal(a[0], b[0])


def test_training_loader_drops_the_last_partial_batch_and_shuffles(table):
    ds = CachedImages(table, np.arange(10), class_labels(table, [30, 60]), eval_transform([16, 12]))
    loader = make_loader(ds, batch_size=4, train=True, num_workers=0, device=torch.device("cpu"))
    assert len(loader) == 2 and isinstance(loader.sampler, torch.utils.data.RandomSampler)


def test_person_rows_group_rows_by_person_in_row_order():
    from maskds.training.draws import PersonRows

    groups = PersonRows(["b", "a", "b", "c", "a", "b"])
    assert groups.person.tolist() == [1, 0, 1, 2, 0, 1]
    assert [m.tolist() for m in groups.members()] == [[1, 4], [0, 2, 5], [3]]
    assert groups.rank().tolist() == [0, 0, 1, 0, 1, 2] and groups.count().tolist() == [3, 2, 3, 1, 2, 3]
    assert PersonRows([]).members() == []
    # `within` orders each person's rows by a key instead (PhotoDraw's random keys), ties in row order
    keyed = PersonRows(["b", "a", "b", "c", "a", "b"], within=[0.5, 0.9, 0.1, 0.3, 0.2, 0.5])
    assert [m.tolist() for m in keyed.members()] == [[4, 1], [2, 0, 5], [3]]
    assert keyed.rank().tolist() == [1, 1, 0, 0, 0, 2]
