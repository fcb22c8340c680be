"""`maskds import-faces`: each source format read from tiny fabricated sources, every bad input reported at
once with nothing written, and the import's folder usable as `maskds build --extra`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskds.cli.main import main as maskds
from maskds.data.cache import load_cache


def face(path, shade: int = 120):
    """A small square 'face' photo (the importer frames it; no detector runs without --draw-masks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((40, 40, 3), shade, dtype=np.uint8)
    img[10:30, 12:28] = (200, 160, 140)
    Image.fromarray(img).save(path)
    return path


def labels(out) -> pd.DataFrame:
    return pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)


def test_utkface_names_give_age_and_gender_even_without_race(tmp_path):
    src = tmp_path / "utk"
    face(src / "25_0_0_20170109150557335.jpg.chip.jpg")
    face(src / "61_1_20170109142408075.jpg.chip.jpg")       # no race field: still read
    face(src / "75_1_3_20170119191000000.jpg.chip.jpg")     # 75 stays 75
    face(src / "._25_0_0_junk.jpg.chip.jpg").write_bytes(b"\x00junk")  # macOS junk: ignored
    assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "utkface", "--num-proc", "1"]) == 0
    df = labels(tmp_path / "out").sort_values("age")
    assert df[["mask", "gender", "age"]].values.tolist() == [
        ["not_wear", "male", "25"], ["not_wear", "female", "61"], ["not_wear", "female", "75"]]
    img = Image.open(tmp_path / "out" / df.image.iloc[0])
    assert img.size == (384, 512)  # framed as the competition's chest-up photo


def test_afad_folders_give_age_and_gender(tmp_path):
    src = tmp_path / "afad"
    face(src / "30" / "111" / "a.jpg")
    face(src / "45" / "112" / "b.jpg")
    assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "afad", "--num-proc", "1"]) == 0
    df = labels(tmp_path / "out").sort_values("age")
    assert df[["gender", "age"]].values.tolist() == [["male", "30"], ["female", "45"]]


def test_fairface_ranges_become_the_band_that_holds_them_in_the_cache(tmp_path, synth_data):
    src = tmp_path / "ff"
    face(src / "train" / "1.jpg")
    face(src / "train" / "2.jpg")
    face(src / "train" / "3.jpg")
    (src / "fairface_label_train.csv").write_text(
        "file,age,gender,race,service_test\ntrain/1.jpg,20-29,Male,East Asian,True\n"
        "train/2.jpg,more than 70,Female,White,False\ntrain/3.jpg,40-49,Female,Indian,True\n")
    out = tmp_path / "out"
    assert maskds(["import-faces", str(src), str(out), "--format", "fairface", "--num-proc", "1"]) == 0
    assert sorted(labels(out).age) == ["20-29", "40-49", "70-"]
    cache = tmp_path / "cache"
    assert maskds(["build", str(synth_data), str(cache), "--size", "32", "24", "--folds", "3", "--num-proc", "1",
                   "--extra", str(out)]) == 0
    train = load_cache(cache)[0]["train"].to_pandas()
    extra = train[train.origin == "extra"]
    assert sorted(extra.age_band) == [0, 1, 2] and (extra.age == -1).all()  # a band, no age in years
    assert (extra["mask"] == 2).all() and (extra["fold"] == -1).all()


def test_a_csv_of_your_own_with_named_columns_and_gender_values(tmp_path):
    src = tmp_path / "mine"
    face(src / "img" / "p1.png")
    face(src / "img" / "p2.png")
    (src / "people.csv").write_text("file_name,years,sex\nimg/p1.png,33,M\nimg/p2.png,19,W\n")
    assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "csv", "--labels", "people.csv",
                   "--image-col", "file_name", "--age-col", "years", "--gender-col", "sex",
                   "--male", "M", "--female", "W", "--num-proc", "1"]) == 0
    assert sorted(labels(tmp_path / "out")[["gender", "age"]].values.tolist()) == [["female", "19"], ["male", "33"]]


def test_min_age_and_limit_choose_the_faces(tmp_path):
    src = tmp_path / "utk"
    for age in (10, 20, 30, 40, 50):
        face(src / f"{age}_0_0_2017.jpg.chip.jpg")
    assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "utkface", "--min-age", "18",
                   "--limit", "2", "--num-proc", "1"]) == 0
    ages = labels(tmp_path / "out").age.astype(int)
    assert len(ages) == 2 and (ages >= 18).all()


@pytest.mark.parametrize("case", ["bad_age", "bad_gender", "unreadable", "empty", "utk_name"])
def test_bad_input_is_reported_with_file_and_line_and_nothing_is_written(tmp_path, capsys, case):
    src = tmp_path / "src"
    fmt = "csv"
    face(src / "a.jpg")
    face(src / "b.jpg")
    rows = {"bad_age": "a.jpg,old,male\nb.jpg,thirty,female\n", "bad_gender": "a.jpg,30,x\nb.jpg,31,male\n",
            "unreadable": "a.jpg,30,male\nb.jpg,31,female\n"}
    if case in rows:
        (src / "labels.csv").write_text("image,age,gender\n" + rows[case])
    if case == "unreadable":
        (src / "b.jpg").write_bytes(b"not an image")
    if case == "empty":
        for p in src.iterdir():
            p.unlink()
        fmt = "utkface"
    if case == "utk_name":
        (src / "a.jpg").rename(src / "x_0_0_2017.jpg.chip.jpg")
        fmt = "utkface"
    out = tmp_path / "out"
    assert maskds(["import-faces", str(src), str(out), "--format", fmt, "--num-proc", "1"]) == 2
    err = capsys.readouterr().err
    expected = {"bad_age": ["labels.csv line 2: age 'old'", "labels.csv line 3: age 'thirty'"],
                "bad_gender": ["labels.csv line 2: gender 'x'"],
                "unreadable": ["b.jpg: cannot be decoded"], "empty": ["no faces found"],
                "utk_name": ["x_0_0_2017.jpg.chip.jpg: not a UTKFace name"]}[case]
    for text in expected:
        assert text in err.replace("\n", " ") or text in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.importing-*"))


def test_an_existing_output_folder_is_refused(tmp_path, capsys):
    src = tmp_path / "utk"
    face(src / "25_0_0_2017.jpg.chip.jpg")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "utkface"]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_draw_masks_skips_and_lists_faces_without_landmarks(tmp_path, capsys):
    src = tmp_path / "utk"
    face(src / "25_0_0_2017.jpg.chip.jpg")  # a flat patch: MTCNN finds no face there
    out = tmp_path / "out"
    assert maskds(["import-faces", str(src), str(out), "--format", "utkface", "--draw-masks", "--num-proc", "1"]) == 2
    assert "no face had landmarks" in capsys.readouterr().err and not out.exists()


def test_a_folder_without_labels_imports_every_face_with_only_its_mask_state_and_a_preview(tmp_path):
    src = tmp_path / "faces"
    face(src / "x" / "a.jpg")
    face(src / "b.png")
    png = tmp_path / "preview.png"
    assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "folder", "--num-proc", "1",
                   "--preview", str(png)]) == 0
    df = labels(tmp_path / "out")
    assert len(df) == 2 and (df["mask"] == "not_wear").all() and (df.gender == "").all() and (df.age == "").all()
    assert Image.open(png).size == (2 * 96, 128 + 14)  # one photo per person: in a row


def test_the_import_is_world_readable_like_a_plain_folder_not_private_to_the_writer(tmp_path):
    import os
    import stat

    src = tmp_path / "utk"
    face(src / "25_0_0_20170109150557335.jpg.chip.jpg")
    old = os.umask(0o022)
    try:
        assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "utkface", "--num-proc", "1"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


@pytest.mark.parametrize("preview, why", [("grid.jpg", "name a .png file"), ("adir.png", "is a folder")])
def test_a_bad_preview_is_refused_before_the_import_runs(tmp_path, capsys, preview, why):
    src = tmp_path / "utk"
    face(src / "25_0_0_20170109150557335.jpg.chip.jpg")
    (tmp_path / "adir.png").mkdir()
    out = tmp_path / "out"
    assert maskds(["import-faces", str(src), str(out), "--format", "utkface", "--num-proc", "1",
                   "--preview", str(tmp_path / preview)]) == 2
    err = capsys.readouterr().err
    assert "--preview" in err and why in err and not out.exists()


def two_coded_faces(src):
    """Two faces in a CSV whose genders are coded 0 and 1 (which is which is up to --male / --female)."""
    face(src / "a.jpg")
    face(src / "b.jpg")
    (src / "labels.csv").write_text("image,age,gender\na.jpg,30,0\nb.jpg,31,1\n")


@pytest.mark.parametrize("given, shared", [(["--female", "0"], "'0'"),                    # against the default male set
                                           (["--male", "M", "x", "--female", "X"], "'x'")])  # any case
def test_male_and_female_values_that_overlap_are_refused_naming_the_value(tmp_path, capsys, given, shared):
    src, out = tmp_path / "src", tmp_path / "out"
    two_coded_faces(src)
    assert maskds(["import-faces", str(src), str(out), "--format", "csv", "--num-proc", "1", *given]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--male" in err and "--female" in err and shared in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.importing-*"))


def test_a_gender_set_given_replaces_its_own_default_only(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    two_coded_faces(src)
    assert maskds(["import-faces", str(src), str(out), "--format", "csv", "--num-proc", "1",
                   "--male", "1", "--female", "0"]) == 0
    assert labels(out).sort_values("age").gender.tolist() == ["female", "male"]


def test_a_limit_above_the_number_of_faces_says_the_set_holds_fewer(tmp_path, capsys):
    src = tmp_path / "utk"
    for age in (10, 20, 30, 40):
        face(src / f"{age}_0_0_2017.jpg.chip.jpg")
    assert maskds(["import-faces", str(src), str(tmp_path / "out"), "--format", "utkface", "--min-age", "18",
                   "--limit", "500", "--num-proc", "1"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning" in err and "3 faces" in err and "fewer than --limit 500" in err, err
    assert len(labels(tmp_path / "out")) == 3


def test_a_face_that_is_not_square_is_framed_without_stretching(tmp_path):
    from PIL import ImageDraw

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    tall = Image.new("RGB", (150, 300), (200, 160, 140))
    ImageDraw.Draw(tall).ellipse((25, 100, 125, 200), fill=(250, 20, 20))
    tall.save(src / "a.png")
    (src / "labels.csv").write_text("image,age,gender\na.png,30,f\n")
    assert maskds(["import-faces", str(src), str(out), "--format", "csv", "--num-proc", "1"]) == 0
    rgb = np.asarray(Image.open(out / labels(out).image.iloc[0])).astype(int)
    ys, xs = np.nonzero((rgb[..., 0] > 230) & (rgb[..., 1] < 60))
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(width - height) <= 0.08 * max(width, height), (width, height)  # the disc stays round
