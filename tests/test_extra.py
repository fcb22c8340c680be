"""`maskds build --extra`: an age range across two bands is counted and said, and the path checks refuse an image
outside the folder, an image listed twice and a copy of a competition training photo (exit 2, nothing written)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from maskds.cli.main import main as maskds
from maskds.data.cache import META_NAME, load_cache

from data_helpers import copy_raw, person_dirs


def noise_image(path, seed: int):
    """A small random picture (no competition photo has its bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


def extra_folder(root, lines: list[str], images: int = 3):
    """An --extra folder with images i0.png.. and labels.csv holding `lines` under the header."""
    for k in range(images):
        noise_image(root / f"i{k}.png", k)
    (root / "labels.csv").write_text("\n".join(["image,mask,gender,age", *lines]) + "\n")
    return root


def build(data, cache, extra, capsys, *more) -> tuple[int, str]:
    rc = maskds(["build", str(data), str(cache), "--size", "32", "24", "--folds", "2", "--num-proc", "1",
                 *(a for folder in (extra, *more) for a in ("--extra", str(folder)))])
    out = capsys.readouterr()
    return rc, " ".join((out.out + out.err).split())  # rich wraps long lines


@pytest.fixture
def small(synth_data, tmp_path):
    return copy_raw(synth_data, tmp_path / "d", persons=4)


def test_an_age_range_across_two_bands_is_not_learned_and_is_counted_and_said(small, tmp_path, capsys):
    extra = extra_folder(tmp_path / "extra", ["i0.png,wear,,25-34", "i1.png,,female,20-29", "i2.png,,male,41"])
    cache = tmp_path / "cache"
    rc, said = build(small, cache, extra, capsys)
    assert rc == 0
    train, meta = load_cache(cache)[0]["train"], load_cache(cache)[1]
    rows = {r["image_name"]: r for r in train if r["origin"] == "extra"}
    assert (rows["i0.png"]["age"], rows["i0.png"]["age_band"], rows["i0.png"]["mask"]) == (-1, -1, 0)
    assert (rows["i1.png"]["age"], rows["i1.png"]["age_band"]) == (-1, 0)  # inside one band: that band
    assert meta["counts"]["extra_age_unused"] == 1
    assert f"{extra / 'labels.csv'} line 2" in said and "25-34" in said
    assert (f"their age is not used (an age range is learned as the one band holding it); their other labels "
            f"are used. The rows: {extra / 'labels.csv'} line 2 (age 25-34 spans") in said
    assert "age not used" in said  # the summary table's row


def test_a_row_whose_only_label_is_a_range_across_two_bands_is_refused(small, tmp_path, capsys):
    extra = extra_folder(tmp_path / "extra", ["i0.png,wear,,", "i1.png,,,25-34"])
    rc, said = build(small, tmp_path / "out" / "cache", extra, capsys)
    assert rc == 2
    assert f"{extra / 'labels.csv'} line 3" in said and "spans two age bands" in said
    assert not (tmp_path / "out").exists()


def test_a_symlink_that_leaves_the_folder_is_refused(small, tmp_path, capsys):
    extra = extra_folder(tmp_path / "extra", ["i0.png,wear,,", "link.png,wear,,"])
    (extra / "link.png").symlink_to(noise_image(tmp_path / "elsewhere" / "x.png", 9))
    (extra / "inside.png").symlink_to(extra / "i1.png")  # a link that stays inside is fine
    with open(extra / "labels.csv", "a") as f:
        f.write("inside.png,not_wear,,\n")
    rc, said = build(small, tmp_path / "out" / "cache", extra, capsys)
    assert rc == 2
    assert f"{extra / 'labels.csv'} line 3: image 'link.png'" in said and "leaves" in said
    assert "line 4" not in said
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("second", ["./i0.png,not_wear,,", "i0.png,wear,,"])
def test_an_image_named_twice_is_refused_naming_both_lines(small, tmp_path, capsys, second):
    """Different labels: which one is right is unknown. The same labels: refused too, not deduplicated (a
    silently doubled row would weigh twice; the user removes the repeat)."""
    extra = extra_folder(tmp_path / "extra", ["i0.png,wear,,", "i1.png,wear,,", second])
    rc, said = build(small, tmp_path / "out" / "cache", extra, capsys)
    assert rc == 2
    assert f"{extra / 'labels.csv'} line 4" in said and "line 2" in said and "i0.png" in said
    assert ("other labels" in said) == second.startswith("./")
    assert not (tmp_path / "out").exists()


def test_the_same_folder_given_twice_is_refused_naming_both_files_and_lines(small, tmp_path, capsys):
    extra = extra_folder(tmp_path / "extra", ["i0.png,wear,,", "i1.png,not_wear,,"])
    rc, said = build(small, tmp_path / "out" / "cache", extra, capsys, extra)
    assert rc == 2
    csv = extra / "labels.csv"
    assert f"{csv} line 2: image 'i0.png' is the image of {csv} line 2 again" in said
    assert f"{csv} line 3: image 'i1.png' is the image of {csv} line 3 again" in said
    assert not (tmp_path / "out").exists()


def test_an_image_hard_linked_into_another_extra_folder_is_refused(small, tmp_path, capsys):
    """As `pseudo --faces` links a folder's images into its OUT: both folders would train each image twice,
    under two person ids."""
    faces = extra_folder(tmp_path / "faces", ["i0.png,wear,,", "i1.png,not_wear,,"])
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    os.link(faces / "i1.png", labelled / "j1.png")
    noise_image(labelled / "j2.png", 7)  # another picture: fine
    (labelled / "labels.csv").write_text("image,mask,gender,age\nj2.png,,male,\nj1.png,not_wear,female,\n")
    rc, said = build(small, tmp_path / "out" / "cache", faces, capsys, labelled)
    assert rc == 2
    assert (f"{labelled / 'labels.csv'} line 3: image 'j1.png' is the image of {faces / 'labels.csv'} line 3 "
            "again with other labels") in said
    assert "j2.png" not in said
    assert not (tmp_path / "out").exists()


def test_a_copy_of_a_competition_training_photo_is_refused_naming_both_paths(small, tmp_path, capsys):
    photo = sorted(person_dirs(small)[1].glob("normal.*"))[0]
    extra = extra_folder(tmp_path / "extra", ["i0.png,wear,,", "copy.jpg,not_wear,,"])
    shutil.copy(photo, extra / "copy.jpg")
    rc, said = build(small, tmp_path / "out" / "cache", extra, capsys)
    assert rc == 2
    assert str((extra / "copy.jpg").resolve()) in said and str(photo) in said and "line 3" in said
    assert not (tmp_path / "out").exists()


def test_an_unchanged_extra_build_is_reused(small, tmp_path, capsys):
    extra = extra_folder(tmp_path / "extra", ["i0.png,wear,,", "i1.png,,female,25-34"])
    cache = tmp_path / "cache"
    assert build(small, cache, extra, capsys)[0] == 0
    stamp = (cache / META_NAME).stat().st_mtime_ns
    rc, said = build(small, cache, extra, capsys)
    assert rc == 0 and "reusing" in said and (cache / META_NAME).stat().st_mtime_ns == stamp
    assert json.loads((cache / META_NAME).read_text())["counts"]["extra_age_unused"] == 1
