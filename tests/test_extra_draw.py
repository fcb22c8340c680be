"""`extra_per_epoch` and `extra_weight`: each epoch trains on every competition photo (or `photos_per_person`
of each person's) and a fresh draw of extra persons (one photo each), the same draw under 1 and 2 processes
and after a resume; extra rows are weighed in the loss."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from maskds.core.labels import ALL_KNOWN, EXTRA, KNOWN_AGE, KNOWN_GENDER
from maskds.training.datasets import class_and_age, load_train_split
from maskds.training.draws import ExtraDraw, PhotoDraw
from maskds.training.losses import MaskLoss
from maskds.config.keys import TrainConfig
from maskds.training.setup import build_loaders, extra_pool

from train_helpers import ACCEL, ROOT, env

POOL = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]  # 5 extra persons, 2 photos each, after 12 fixed rows
FIXED = [p for _ in range(3) for p in "vwxyz"]  # the multi-process test's 15 fixed rows: 5 persons x 3 photos


def test_each_epoch_draws_count_distinct_persons_one_photo_each_from_seed_and_epoch():
    draw = ExtraDraw(12, POOL, 3, seed=5)
    assert len(draw) == 15
    epochs = [draw.drawn(e) for e in range(6)]
    for d in epochs:
        persons = {POOL[p - 12] for p in d}
        assert len(d) == 3 and len(persons) == 3 and all(12 <= p < 22 for p in d)
    assert len({tuple(sorted(d)) for d in epochs}) > 1                          # drawn anew each epoch
    again = ExtraDraw(12, POOL, 3, seed=5)
    assert [list(again.drawn(e)) for e in (3, 0)] == [list(epochs[3]), list(epochs[0])]  # any order, same draw
    assert [draw.position(i, 2) for i in range(12)] == list(range(12))          # competition rows: every epoch
    assert [draw.position(i, 2) for i in range(12, 15)] == list(epochs[2])
    assert len(ExtraDraw(12, POOL, 50, seed=5)) == 12 + 5                       # at most every person


@pytest.mark.parametrize("persons,count", [(12, 4), (12, 5), (7, 3), (10, 9), (13, 13), (30, 7)])
def test_the_epochs_draw_every_pool_person_once_before_any_twice(persons, count):
    pool = [f"p{k // 2}" for k in range(2 * persons)]  # 2 photos each
    draw = ExtraDraw(3, pool, count, seed=7)
    drawn = np.zeros(persons, dtype=int)
    for epoch in range(4 * persons // count + 2):  # several passes, epochs that span two of them included
        these = draw.persons(epoch)
        assert len(these) == count == len(set(these.tolist()))  # distinct within an epoch
        drawn[these] += 1
        assert drawn.max() - drawn.min() <= 1, (epoch, drawn)  # no one drawn twice while another not yet
    again = ExtraDraw(3, pool, count, seed=7)
    assert [again.persons(e).tolist() for e in (5, 0)] == [draw.persons(e).tolist() for e in (5, 0)]  # any order
    if persons > count:
        assert draw._pass(0).tolist() != draw._pass(1).tolist()  # each pass shuffled anew


def test_the_pool_is_the_extra_rows_after_the_competitions(tmp_path, synth_data):
    from maskds.cli.main import main as maskds

    extra = tmp_path / "extra"
    (extra / "i").mkdir(parents=True)
    src = sorted((synth_data / "train" / "images").glob("*/normal.jpg"))[:4]
    lines = ["image,mask,gender,age,person"]
    for k, p in enumerate(src):
        ImageOps.mirror(Image.open(p)).save(extra / "i" / f"{k}.jpg")  # not a competition photo's bytes
        lines.append(f"i/{k}.jpg,not_wear,female,40,p{k // 2}")
    (extra / "labels.csv").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "cache"
    assert maskds(["build", str(synth_data), str(cache), "--size", "32", "24", "--folds", "3", "--num-proc", "1",
                   "--extra", str(extra)]) == 0
    table, _ = load_train_split(cache)
    train = np.arange(len(table))
    rows, draw = extra_pool(table, train, 1, seed=0)
    origin = np.asarray(table["origin"])[rows]
    assert (origin[:draw.n_fixed] == "train").all() and (origin[draw.n_fixed:] == "extra").all()
    assert len(draw) == draw.n_fixed + 1 and len(draw.members) == 2             # persons p0 and p1
    rows0, draw0 = extra_pool(table, train, 0, seed=0)                           # 0: every extra row every epoch
    assert np.array_equal(rows0, train) and draw0 is None
    known = class_and_age(table, (30, 60))[:, 2]
    assert ((known & EXTRA) != 0).sum() == 4
    # with person_sampling, the extra photo drawn is the one that keeps its gender and age
    config = TrainConfig(person_sampling=True, extra_per_epoch=2, num_workers=0, seed=3, augment="none")
    data = build_loaders(config, table, 0, [32, 24], torch.device("cpu")).train_set
    for epoch in range(4):
        data.set_epoch(epoch)
        for _, row in data.__getitems__([len(data) - 2, len(data) - 1]):
            assert int(row[2]) & KNOWN_GENDER and int(row[2]) & KNOWN_AGE and int(row[2]) & EXTRA


def test_extra_rows_are_weighed_by_extra_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 8)
    y = torch.tensor([[7, 35, ALL_KNOWN], [3, 40, ALL_KNOWN | EXTRA]])
    loss = lambda w: MaskLoss("multihead", extra_weight=w)(logits, y)  # noqa: E731
    one = MaskLoss("multihead")(logits[:1], y[:1, :2])
    assert loss(0.0) == pytest.approx(one.item(), rel=1e-5)                     # weight 0: as if absent
    assert loss(1.0) != pytest.approx(loss(0.5).item())


SCRIPT = """
import json, sys
import torch
import numpy as np
from accelerate import Accelerator, DataLoaderConfiguration
from maskds.training.datasets import CachedImages, load_train_split, make_loader
from maskds.training.draws import ExtraDraw, PhotoDraw
from maskds.model.transforms import train_transform

cache, first, last, count, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
table, _ = load_train_split(cache)
draw = ExtraDraw(15, %r, count, seed=5, photos=PhotoDraw(%r, k, 5) if k else None)
data = CachedImages(table, np.arange(25), np.arange(len(table)), train_transform([32, 24], "light"), seed=5,
                    extra_draw=draw)
acc = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=5))
loader = acc.prepare(make_loader(data, 3, True, 0, torch.device("cpu")))
seen = {}
for epoch in range(first, last):
    loader.set_epoch(epoch)
    data.set_epoch(epoch)
    rows = []
    for x, y in loader:
        rows += acc.gather(y).tolist()
    seen[epoch] = sorted(rows)
if acc.is_main_process:
    print("SEEN " + json.dumps(seen))
acc.wait_for_everyone()
acc.state.destroy_process_group()  # gloo torn down at interpreter exit can abort the process (as in infer.py)
""" % (POOL, FIXED)


def _seen(tmp_path, cache, first: int, last: int, processes: int, count: int = 3, k: int = 0) -> dict:
    script = tmp_path / "draw.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, str(script), str(cache), str(first), str(last), str(count), str(k)]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCEL / "cpu_2proc.yaml"),
               *cmd[1:]]
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("SEEN "))
    return {int(k): v for k, v in json.loads(line[5:]).items()}


@pytest.mark.slow
def test_one_and_two_processes_and_a_resume_train_on_the_same_drawn_rows(tiny_cache, tmp_path):
    one = _seen(tmp_path, tiny_cache, 0, 3, 1)
    two = _seen(tmp_path, tiny_cache, 0, 3, 2)
    resumed = _seen(tmp_path, tiny_cache, 2, 3, 1)        # a run resumed at epoch 2
    draw = ExtraDraw(15, POOL, 3, seed=5)
    for epoch in range(3):  # 18 samples, batches of 3: nothing dropped, nothing padded, on 1 or 2 processes
        assert one[epoch] == sorted([*range(15), *draw.drawn(epoch).tolist()])
    assert two == one and resumed[2] == one[2]


@pytest.mark.slow
def test_one_and_two_processes_and_a_resume_train_on_the_same_drawn_photos_per_person(tiny_cache, tmp_path):
    one = _seen(tmp_path, tiny_cache, 0, 3, 1, count=2, k=2)
    two = _seen(tmp_path, tiny_cache, 0, 3, 2, count=2, k=2)
    resumed = _seen(tmp_path, tiny_cache, 2, 3, 1, count=2, k=2)
    draw = ExtraDraw(15, POOL, 2, seed=5, photos=PhotoDraw(FIXED, 2, 5))
    for epoch in range(3):  # 5 persons x 2 + 2 extra = 12 samples, batches of 3 on 1 or 2 processes
        assert one[epoch] == sorted([*draw.photos.drawn(epoch)[0].tolist(), *draw.drawn(epoch).tolist()])
    assert len({tuple(v) for v in one.values()}) == 3 and two == one and resumed[2] == one[2]


def test_extra_per_epoch_on_a_cache_without_extra_rows_is_said_not_silently_ignored(tiny_cache, tmp_path, synth_data):
    from maskds.training.fit import extra_unused

    table, _ = load_train_split(tiny_cache)
    note = extra_unused(TrainConfig(cache=str(tiny_cache), extra_per_epoch=8), table)
    assert note is not None and "extra_per_epoch=8" in note and "--extra" in note
    assert extra_unused(TrainConfig(cache=str(tiny_cache), extra_per_epoch=0), table) is None
