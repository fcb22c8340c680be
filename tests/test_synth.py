"""Synthetic data: the raw layout with its quirks, the eval truth, determinism, and refusing a non-empty OUT."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskds.core import images, labels
from maskds.core.errors import UserError
from maskds.synth.generate import synthesize


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthesize(tmp_path / name, persons=3, eval_persons=1, seed=seed)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c


def test_quirks_appear_at_least_once(tmp_path):
    synthesize(tmp_path / "d", persons=10, eval_persons=0, seed=1)
    files = [p for p in (tmp_path / "d" / "train" / "images").rglob("*") if p.is_file()]
    suffixes = Counter(p.suffix for p in files if not p.name.startswith("."))
    assert suffixes[".jpeg"] >= 1 and suffixes[".png"] >= 1
    assert any(p.name == "._mask1.jpg" for p in files)
    rotated = [p for p in files if p.suffix == ".jpg" and not p.name.startswith(".")
               and Image.open(p).getexif().get(0x0112, 1) != 1]
    assert rotated
    # Stored sideways, upright once the EXIF orientation is applied.
    assert Image.open(rotated[0]).size == (512, 384)
    assert images.open_rgb(rotated[0]).size == (384, 512)
    assert any(r["race"] != "Asian" for r in _csv(tmp_path / "d" / "train" / "train.csv"))
    assert not (tmp_path / "d" / "eval").exists()


def test_layout_and_labels_match_the_competition(synth_data):
    rows = _csv(synth_data / "train" / "train.csv")
    assert list(rows[0]) == ["id", "gender", "race", "age", "path"]
    for r in rows:
        assert r["path"] == f"{r['id']}_{r['gender']}_{r['race']}_{r['age']}"
        assert 18 <= int(r["age"]) <= 60
    img = images.open_rgb(next((synth_data / "train" / "images" / rows[0]["path"]).glob("normal.*")))
    assert img.size == (384, 512)


def test_eval_has_opaque_names_zero_answers_and_the_truth_aside(synth_data):
    info = _csv(synth_data / "eval" / "info.csv")
    answers = _csv(synth_data / "eval" / "answers.csv")
    assert list(info[0]) == ["ImageID", "ans"] and {r["ans"] for r in info} == {"0"}
    assert [r["ImageID"] for r in info] == [r["ImageID"] for r in answers]
    assert all(len(r["ImageID"]) == 36 and r["ImageID"].endswith(".jpg") for r in info)
    classes = [int(r["ans"]) for r in answers]
    assert all(0 <= c < labels.NUM_CLASSES for c in classes)
    # 7 images per person: mask states 5:1:1.
    masks = Counter(labels.decode(c)[0] for c in classes)
    assert masks[0] == 5 * masks[1] == 5 * masks[2]


def test_age_distribution_has_the_rare_upper_band():
    from maskds.synth.generate import _band_ages  # the ages synthesize draws, without drawing pictures

    ages = _band_ages(np.random.default_rng(0), 2000)
    bands = Counter(labels.age_band(a) for a in ages)
    assert set(ages) <= set(range(18, 61)) and max(ages) == 60
    assert bands[2] < bands[1] < bands[0]
    assert 0.08 < bands[2] / len(ages) < 0.16
    assert all(a == 60 for a in ages if labels.age_band(a) == 2)


def test_refuses_a_non_empty_out(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("mine")
    with pytest.raises(UserError, match="not an empty folder"):
        synthesize(tmp_path / "d", persons=1, eval_persons=0)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["x.txt"]
