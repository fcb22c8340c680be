"""The arrow cache: round trip, schema, reuse and mismatch detection, atomic builds, load errors, CLI failure."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from maskds.core import images
from maskds.core.errors import UserError
from maskds.data.cache import META_NAME, build_cache, load_cache
from maskds.data.layout import read_train

from data_helpers import copy_raw, person_dirs

ROOT = Path(__file__).resolve().parents[1]


def test_everything_synth_writes_is_built(synth_data, tiny_cache):
    dd, meta = load_cache(tiny_cache)
    assert dd["train"].num_rows == len(read_train(synth_data)) == 24 * 7
    assert dd["eval"].num_rows == 8 * 7
    assert meta["format_version"] == 1
    assert meta["args"] == {"size": [64, 48], "folds": 3, "seed": 42, "corrections": "default"}
    assert set(dd["train"].column_names) >= {"image", "person_id", "mask", "gender", "race", "age", "fold",
                                             "image_name", "path"}
    assert isinstance(dd["train"].features["image"], datasets.Image)


def test_round_trip_matches_the_source_after_the_same_resize(synth_data, tiny_cache):
    dd, meta = load_cache(tiny_cache)
    size = tuple(meta["args"]["size"])
    train = dd["train"].cast_column("image", datasets.Image(decode=False))
    # Include the quirky files (.png, .jpeg, EXIF-rotated) in the check.
    picks = [i for i, p in enumerate(train["path"]) if not p.endswith(".jpg")] + [0, 50, 100]
    for i in picks:
        row = train[i]
        got = images.decode_cached(row["image"]["bytes"])
        want = np.asarray(images.prepare(synth_data / row["path"], size))
        assert got.shape == want.shape == (64, 48, 3)
        assert np.abs(got.astype(int) - want).mean() < 3.0  # JPEG q95 on noisy pictures


def test_eval_rows_follow_info_csv(synth_data, tiny_cache):
    dd, _ = load_cache(tiny_cache)
    with open(synth_data / "eval" / "info.csv", newline="") as f:
        ids = [row["ImageID"] for row in csv.DictReader(f)]
    assert dd["eval"]["image_id"] == ids


def _small(synth_data, tmp_path, **kw):
    return copy_raw(synth_data, tmp_path / "d", persons=kw.pop("persons", 4), **kw)


def test_data_without_eval_builds_the_train_split_only(synth_data, tmp_path, capsys):
    data = _small(synth_data, tmp_path, eval_images=None)
    build_cache(data, tmp_path / "cache", size_hw=(32, 24), folds=2, num_proc=1)
    dd, meta = load_cache(tmp_path / "cache")
    assert list(dd) == ["train"] and dd["train"].num_rows == 28
    assert meta["counts"]["eval_images"] is None
    assert "train split only" in capsys.readouterr().err


def test_rebuild_with_same_inputs_reuses_the_cache(synth_data, tmp_path, capsys):
    data = _small(synth_data, tmp_path)
    cache = tmp_path / "cache"
    build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    stamp = (cache / META_NAME).stat().st_mtime_ns
    build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    assert "reusing" in capsys.readouterr().err
    assert (cache / META_NAME).stat().st_mtime_ns == stamp


def test_other_arguments_are_refused_then_forced(synth_data, tmp_path):
    data = _small(synth_data, tmp_path)
    cache = tmp_path / "cache"
    build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    with pytest.raises(UserError) as err:
        build_cache(data, cache, size_hw=(40, 30), folds=2, num_proc=1)
    assert "size" in str(err.value) and "--force" in str(err.value)
    build_cache(data, cache, size_hw=(40, 30), folds=2, num_proc=1, force=True)
    dd, meta = load_cache(cache)
    assert meta["args"]["size"] == [40, 30]
    assert dd["train"][0]["image"].size == (30, 40)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_changed_inputs_are_detected(synth_data, tmp_path):
    data = _small(synth_data, tmp_path)
    cache = tmp_path / "cache"
    build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    img = next(person_dirs(data)[0].glob("mask1.*"))
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    with pytest.raises(UserError, match="inputs"):
        build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)


def test_another_format_version_is_detected(synth_data, tmp_path):
    data = _small(synth_data, tmp_path)
    cache = tmp_path / "cache"
    build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    meta = json.loads((cache / META_NAME).read_text())
    (cache / META_NAME).write_text(json.dumps({**meta, "format_version": 0}))
    with pytest.raises(UserError, match="format version"):
        build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    with pytest.raises(UserError, match="format version"):
        load_cache(cache)


def test_a_folder_that_is_not_a_cache_is_never_replaced(synth_data, tmp_path):
    data = _small(synth_data, tmp_path)
    cache = tmp_path / "mine"
    cache.mkdir()
    (cache / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a maskds cache"):
        build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1, force=True)
    assert (cache / "precious.txt").read_text() == "keep me"


def test_load_cache_refuses_missing_and_foreign_folders(tmp_path):
    with pytest.raises(UserError, match="no such cache"):
        load_cache(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a maskds cache"):
        load_cache(tmp_path / "plain")


@pytest.mark.parametrize("when", ["encoding", "saving"])
def test_an_interrupted_build_leaves_no_cache(synth_data, tmp_path, monkeypatch, when):
    data = _small(synth_data, tmp_path)
    cache = tmp_path / "out" / "cache"
    if when == "encoding":
        calls = {"n": 0}
        real = images.encode_jpeg

        def flaky(img, quality=95):
            calls["n"] += 1
            if calls["n"] == 10:
                raise KeyboardInterrupt  # as if Ctrl-C arrived mid-build
            return real(img, quality)
        monkeypatch.setattr(images, "encode_jpeg", flaky)
        expected = KeyboardInterrupt
    else:
        real_save = datasets.DatasetDict.save_to_disk

        def half_save(self, path, **kw):
            real_save(self, path, **kw)  # files written, then the disk fills up
            raise OSError("No space left on device")
        monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", half_save)
        expected = OSError
    with pytest.raises(expected):
        build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1)
    assert not cache.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary folder left behind


def test_cli_build_with_a_corrupt_image_fails_naming_it(synth_data, tmp_path):
    data = _small(synth_data, tmp_path, persons=3)
    bad = next(person_dirs(data)[1].glob("incorrect_mask.*"))
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG any more")
    cache = tmp_path / "cache"
    exe = Path(sys.executable).parent / "maskds"
    proc = subprocess.run([str(exe), "build", str(data), str(cache), "--size", "32", "24", "--folds", "2",
                           "--num-proc", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert str(bad) in proc.stderr
    assert not cache.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize("rule", [None, 1])
def test_a_face_crop_cache_cut_by_another_fixed_box_rule_is_not_reused(synth_data, tmp_path, rule):
    """A cache whose build arguments lack the fixed box's rule (built before it was recorded) or name an older
    one is refused, at build and at load, with the command that rebuilds it; --force rebuilds it."""
    data = _small(synth_data, tmp_path)
    cache = tmp_path / "cache"
    build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1, face_crop="fixed", face_margin=0.2)
    meta = json.loads((cache / META_NAME).read_text())
    current = meta["args"].pop("face_box_rule", None)
    assert current is not None and current != rule
    if rule is not None:
        meta["args"]["face_box_rule"] = rule
    (cache / META_NAME).write_text(json.dumps(meta))
    command = f"maskds build {data.resolve()} {cache} --size 32 24 --folds 2 --seed 42 --face-crop fixed " \
              "--face-margin 0.2 --force"
    with pytest.raises(UserError) as err:
        build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1, face_crop="fixed", face_margin=0.2)
    assert "face_box_rule" in str(err.value) and command in str(err.value)
    with pytest.raises(UserError) as err:
        load_cache(cache)
    assert "fixed face box" in str(err.value) and command in str(err.value)
    build_cache(data, cache, size_hw=(32, 24), folds=2, num_proc=1, face_crop="fixed", face_margin=0.2, force=True)
    assert load_cache(cache)[1]["args"]["face_box_rule"] == current


def test_a_whole_photo_cache_records_no_face_box_rule(synth_data, tmp_path):
    data = _small(synth_data, tmp_path)
    build_cache(data, tmp_path / "cache", size_hw=(32, 24), folds=2, num_proc=1)
    assert "face_box_rule" not in load_cache(tmp_path / "cache")[1]["args"]
