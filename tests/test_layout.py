"""Raw layout parsing with each quirk, and each kind of validation error: named in the message, no cache."""
from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest

from maskds.core import labels
from maskds.core.errors import UserError
from maskds.data.cache import build_cache
from maskds.data.layout import parse_folder_name, read_eval, read_train, scan

from data_helpers import copy_raw, person_dirs, rewrite_csv


def test_synthetic_layout_parses_with_every_quirk(synth_data):
    records = read_train(synth_data)
    per_person = Counter(r.person_id for r in records)
    assert len(per_person) == 24 and set(per_person.values()) == {7}
    exts = Counter(os.path.splitext(r.path)[1] for r in records)
    assert exts[".jpeg"] >= 1 and exts[".png"] >= 1 and exts[".jpg"] > 100
    junk = list((synth_data / "train" / "images").glob("*/._mask1.jpg"))
    assert junk and not any(r.path.endswith("._mask1.jpg") for r in records)
    assert any(r.race != "Asian" for r in records)
    assert {r.image_name for r in records} == set(labels.IMAGE_STEMS)
    assert all(r.mask == labels.IMAGE_STEMS[r.image_name] for r in records)
    assert len(read_eval(synth_data)) == 8 * 7


def test_hidden_and_windows_junk_are_skipped(synth_data, tmp_path):
    data = copy_raw(synth_data, tmp_path / "d", persons=2)
    folder = person_dirs(data)[0]
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "Thumbs.db").write_bytes(b"junk")
    (data / "train" / "images" / ".DS_Store").write_bytes(b"junk")
    assert len(read_train(data)) == 14


@pytest.mark.parametrize("name, expected", [
    ("000001_female_Asian_45", ("000001", 1, "Asian", 45)),
    ("001498-1_male_Asian_60", ("001498-1", 0, "Asian", 60)),
    ("000002_Male_African_American_33", ("000002", 0, "African_American", 33)),
])
def test_folder_names_parse(name, expected):
    assert parse_folder_name(name) == expected


@pytest.mark.parametrize("name", ["000001_female_Asian", "000001_other_Asian_45", "000001_male_Asian_x"])
def test_bad_folder_names_are_rejected(name):
    with pytest.raises(ValueError):
        parse_folder_name(name)


def _missing_image(d):
    p = next(person_dirs(d)[0].glob("normal.*"))
    p.unlink()
    return p.parent


def _duplicate_stem(d):
    folder = person_dirs(d)[0]
    src = next(folder.glob("mask2.*"))
    shutil.copy(src, folder / "mask2.png" if src.suffix != ".png" else folder / "mask2.jpg")
    return folder


def _bad_folder_name(d):
    folder = person_dirs(d)[0]
    bad = folder.with_name(folder.name.replace("_Asian_", "_Asian_x"))
    folder.rename(bad)
    return bad


def _csv_row_without_folder(d):
    shutil.rmtree(person_dirs(d)[1])
    return d / "train" / "train.csv"


def _folder_not_in_csv(d):
    rewrite_csv(d / "train" / "train.csv", lambda rows: rows[:2] + rows[3:])
    return person_dirs(d)[1]


def _csv_disagrees(d):
    def edit(rows):
        rows[1][3] = str(int(rows[1][3]) + 1)  # age
        return rows
    rewrite_csv(d / "train" / "train.csv", edit)
    return d / "train" / "train.csv"


def _unexpected_file(d):
    f = person_dirs(d)[0] / "mask6.jpg"
    shutil.copy(next(person_dirs(d)[0].glob("mask1.*")), f)
    return f


def _corrupt_image(d):
    f = next(person_dirs(d)[2].glob("mask3.*"))
    f.write_bytes(f.read_bytes()[:300])  # truncated
    return f


def _eval_image_missing(d):
    f = next((d / "eval" / "images").iterdir())
    f.unlink()
    return f


def _missing_train_csv(d):
    (d / "train" / "train.csv").unlink()
    return d / "train" / "train.csv"


BREAKERS = [_missing_image, _duplicate_stem, _bad_folder_name, _csv_row_without_folder, _folder_not_in_csv,
            _csv_disagrees, _unexpected_file, _corrupt_image, _eval_image_missing, _missing_train_csv]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__.strip("_"))
def test_each_validation_error_names_the_file_and_leaves_no_cache(synth_data, tmp_path, breaker):
    data = copy_raw(synth_data, tmp_path / "d", persons=3)
    named = breaker(data)
    cache = tmp_path / "out" / "cache"
    with pytest.raises(UserError) as err:
        build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    assert str(named) in str(err.value)
    assert not cache.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_all_problems_are_reported_together(synth_data, tmp_path):
    data = copy_raw(synth_data, tmp_path / "d", persons=3)
    named = [_missing_image(data), _corrupt_image(data), _eval_image_missing(data)]
    with pytest.raises(UserError) as err:
        build_cache(data, tmp_path / "cache", size_hw=(32, 24), folds=2, num_proc=1)
    assert len(err.value.problems) == 3
    for path in named:
        assert str(path) in str(err.value)


def test_data_without_eval_reads_train_only(synth_data, tmp_path):
    data = copy_raw(synth_data, tmp_path / "d", persons=2, eval_images=None)
    layout = scan(data)
    assert layout.problems == [] and layout.eval is None and len(layout.train) == 14
    with pytest.raises(UserError, match="eval"):
        read_eval(data)
