"""`photos_per_person`: each epoch each competition person trains on k of its photos, drawn from (seed, epoch)
alone (the same on every process and after a resume); the epoch, and the schedule's steps, shrink to persons x k
(+ extra_per_epoch); 0 keeps every row as before."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from maskds.config.keys import TrainConfig, load_config
from maskds.core.errors import UserError
from maskds.core.labels import KNOWN_AGE, KNOWN_GENDER
from maskds.training.datasets import CachedImages, fold_split, load_train_split
from maskds.training.draws import ExtraDraw, PhotoDraw
from maskds.training.setup import build_loaders, extra_pool

from train_helpers import ROOT

# 4 persons x 7 photos, interleaved as no cache orders them (the draw groups rows by person itself)
PERSONS = [p for _ in range(7) for p in ("d", "b", "a", "c")]


def _by_person(positions) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for pos in positions:
        out.setdefault(PERSONS[pos], []).append(int(pos))
    return out


@pytest.fixture(scope="module")
def table(tiny_cache):
    return load_train_split(tiny_cache)[0]


def test_k_distinct_photos_of_each_person_drawn_anew_each_epoch_and_the_same_for_a_seed_and_epoch():
    draw = PhotoDraw(PERSONS, 2, seed=5)
    assert len(draw) == 4 * 2
    epochs = [draw.drawn(e)[0] for e in range(6)]
    for positions in epochs:
        per = _by_person(positions)
        assert len(positions) == 8 and sorted(per) == ["a", "b", "c", "d"]
        assert all(len(set(v)) == 2 for v in per.values())                      # 2 distinct photos each
    assert len({tuple(sorted(p)) for p in epochs}) == 6                         # drawn anew each epoch
    again = PhotoDraw(PERSONS, 2, seed=5)                                       # another process, a resume
    assert [again.drawn(e)[0].tolist() for e in (4, 1)] == [epochs[4].tolist(), epochs[1].tolist()]
    assert PhotoDraw(PERSONS, 2, seed=6).drawn(1)[0].tolist() != epochs[1].tolist()  # the seed draws too
    first = draw.drawn(3)[1]                                                    # person_sampling's kept photo:
    assert sorted(PERSONS[i] for i in np.flatnonzero(first)) == ["a", "b", "c", "d"]  # one per person,
    assert set(np.flatnonzero(first)) <= set(draw.drawn(3)[0].tolist())          # among the drawn


def test_a_person_with_fewer_photos_gives_all_and_every_photo_is_drawn_as_often():
    draw = PhotoDraw(["x", "y", "y", "y"], 2, seed=0)
    assert len(draw) == 1 + 2 and 0 in draw.drawn(0)[0]
    # uniform, not by mask state: each of a person's 7 photos (5 worn, 1 incorrect, 1 not worn) is drawn with
    # chance k/7, so an epoch keeps the mask balance of all photos in expectation
    many = PhotoDraw(np.repeat(np.arange(300), 7), 2, seed=1)
    counts = np.bincount(np.concatenate([many.drawn(e)[0] % 7 for e in range(20)]), minlength=7)
    assert counts.sum() == 300 * 2 * 20 and np.allclose(counts / counts.sum(), 1 / 7, atol=0.01)


def test_the_epoch_reads_the_drawn_photos_then_the_drawn_extra_persons():
    pool = ["e", "e", "f", "f", "g"]
    draw = ExtraDraw(28, pool, 2, seed=3, photos=PhotoDraw(PERSONS, 3, seed=3))
    assert len(draw) == 4 * 3 + 2
    for epoch in range(3):
        seen = [draw.position(i, epoch) for i in range(len(draw))]
        assert seen[:12] == draw.photos.drawn(epoch)[0].tolist() and seen[12:] == draw.drawn(epoch).tolist()
        assert all(28 <= p < 33 for p in seen[12:]) and len(set(seen)) == len(seen)
    only_photos = ExtraDraw(28, [], 0, seed=3, photos=PhotoDraw(PERSONS, 3, seed=3))  # no --extra pool
    assert len(only_photos) == 12 and only_photos.position(11, 0) == draw.position(11, 0)


def test_zero_keeps_every_row_and_k_sizes_the_epoch_on_a_cache(table):
    train = fold_split(table, 0).train
    persons = len(set(np.asarray(table["person_id"])[train]))
    assert extra_pool(table, train, 0, 42, 0) == (train, None)                  # the default: no draw at all
    assert extra_pool(table, train, 0, 42, 7)[1] is None                        # nobody has more than 7 photos
    rows, draw = extra_pool(table, train, 0, 42, 2)
    assert np.array_equal(rows, train) and len(draw) == persons * 2
    data = CachedImages(table, rows, np.arange(len(table)), lambda image: {"image": image}, seed=None,
                        extra_draw=draw)
    for epoch in (0, 1):
        data.set_epoch(epoch)
        read = [int(y) for _, y in data.__getitems__(list(range(len(data))))]  # labels = cache row numbers
        assert read == train[draw.photos.drawn(epoch)[0]].tolist()
        per_person = np.unique(np.asarray(table["person_id"])[read], return_counts=True)[1]
        assert len(per_person) == persons and (per_person == 2).all()


def _loaders(table, **keys):
    config = TrainConfig(pretrained="none", num_workers=0, batch_size=4, augment="none", seed=3, **keys)
    return config, build_loaders(config, table, 0, [32, 24], torch.device("cpu"))


def test_the_loader_and_the_schedule_follow_the_shorter_epoch(table):
    from accelerate import Accelerator

    from maskds.training.setup import build_fold, build_model

    persons = len(set(np.asarray(table["person_id"])[fold_split(table, 0).train]))
    every = _loaders(table)[1]
    assert len(every.train_set) == len(fold_split(table, 0).train)              # 0: as before
    config, loaders = _loaders(table, photos_per_person=2, epochs=3)
    assert len(loaders.train_set) == persons * 2 and len(loaders.train) == persons * 2 // 4
    model, ema = build_model(config, torch.device("cpu"))
    state = build_fold(config, Accelerator(cpu=True), model, ema, loaders)
    assert state.schedule.updates_per_epoch == persons * 2 // 4 and state.schedule.total == 3 * (persons * 2 // 4)


def test_with_person_sampling_the_first_drawn_photo_keeps_gender_and_age(table):
    _, loaders = _loaders(table, photos_per_person=3, person_sampling=True)
    data, persons = loaders.train_set, np.asarray(table["person_id"])
    for epoch in range(3):
        data.set_epoch(epoch)
        rows = data.extra_draw.photos.drawn(epoch)[0]
        kept = [persons[data.rows[p]] for (_, y), p in zip(data.__getitems__(list(range(len(data)))), rows)
                if int(y[2]) & KNOWN_GENDER and int(y[2]) & KNOWN_AGE]
        assert sorted(kept) == sorted(set(persons[data.rows])) == sorted(set(kept))  # once per person


@pytest.mark.parametrize("value", ["-1", "true", "2.5"])
def test_bad_photos_per_person_is_refused_naming_the_key(value):
    with pytest.raises(UserError, match="photos_per_person"):
        load_config(ROOT / "configs/demo.yaml", [f"photos_per_person={value}"])
    assert TrainConfig().photos_per_person == 0
