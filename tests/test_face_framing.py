"""External faces marked as face crops (`maskds import-faces --frame crop`, labels.csv `framing: face`): the
cache only cuts them to its shape and resizes them, where a competition photo (or an unmarked row) is
face-cropped; a bad `framing` value is reported with file and line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskds.cli.main import main as maskds
from maskds.core.faces import centre_window
from maskds.data.cache import load_cache


def striped_face(path):
    """A 120x120 'aligned face crop': red bands on the left and right 20 px, green between, and its bottom
    20 rows (the chin) blue."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((120, 120, 3), dtype=np.uint8)
    img[:, :20] = img[:, 100:] = (220, 30, 30)
    img[:, 20:100] = (30, 220, 30)
    img[100:] = (30, 30, 220)
    Image.fromarray(img).save(path)
    return path


def rgb(img) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(int)


def test_centre_window_is_the_largest_centred_region_of_the_cache_shape():
    assert centre_window((60, 60), (40, 30)) == (8, 0, 53, 60)      # a square cut to 3:4 portrait: the sides go
    assert centre_window((300, 400), (40, 30)) == (0, 0, 300, 400)  # already 3:4: all of it
    assert centre_window((400, 300), (40, 30)) == (88, 0, 313, 300)  # landscape: the middle 225 px


def test_frame_crop_marks_the_rows_and_keeps_the_face_as_it_is(tmp_path):
    src = tmp_path / "utk"
    striped_face(src / "25_0_0_20170109150557335.jpg.chip.jpg")
    out = tmp_path / "out"
    assert maskds(["import-faces", str(src), str(out), "--format", "utkface", "--frame", "crop",
                   "--num-proc", "1"]) == 0
    df = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)
    assert df.framing.tolist() == ["face"]
    assert Image.open(out / df.image.iloc[0]).size == (120, 120)  # not placed in a 384x512 portrait


@pytest.mark.parametrize("face_crop", ["fixed", None])
def test_a_marked_face_is_only_fitted_to_the_cache_shape_and_an_unmarked_one_is_cropped(
        tmp_path, synth_data, face_crop):
    folder = tmp_path / "extra"
    striped_face(folder / "a.jpg")
    striped_face(folder / "b.jpg")
    (folder / "labels.csv").write_text("image,mask,gender,age,framing\n"
                                       "a.jpg,not_wear,male,30,face\nb.jpg,not_wear,female,40,\n")
    cache = tmp_path / "cache"
    args = ["build", str(synth_data), str(cache), "--size", "80", "60", "--folds", "3", "--num-proc", "1",
            "--extra", str(folder)] + (["--face-crop", face_crop] if face_crop else [])
    assert maskds(args) == 0
    train = load_cache(cache)[0]["train"]
    extra = {r["image_name"]: r for r in train if r["origin"] == "extra"}
    marked, plain = rgb(extra["a.jpg"]["image"]), rgb(extra["b.jpg"]["image"])
    assert marked.shape == plain.shape == (80, 60, 3)
    # Marked: the centred 3:4 window of the face (x 15..105, every row), resized: the chin stays (blue bottom
    # row), the red bands are 5/90 of the width (3 px of 60), so column 7 is green; nothing black.
    assert marked[-1, :, 2].mean() > 150
    assert marked[:, 7, 1].mean() > marked[:, 7, 0].mean() + 80
    assert marked.max(axis=2).min() > 60
    if face_crop:  # unmarked: cut around the fixed face box as if it were a portrait, the chin cut off
        assert plain[-1, :, 2].mean() < 100
        assert load_cache(cache)[1]["face_crop"]["marked_faces"] == 1
        assert extra["a.jpg"]["face_box"] == [0.0, 0.0, 1.0, 1.0] and extra["a.jpg"]["face_found"]
    else:  # whole-photo cache: the unmarked square is squeezed to 3:4, its red bands stay 1/6 wide (10 px)
        assert plain[:, 7, 0].mean() > plain[:, 7, 1].mean() + 80


def test_a_bad_framing_value_is_reported_with_file_and_line(tmp_path, synth_data, capsys):
    folder = tmp_path / "extra"
    striped_face(folder / "a.jpg")
    (folder / "labels.csv").write_text("image,mask,gender,age,framing\na.jpg,not_wear,male,30,aligned\n")
    cache = tmp_path / "cache"
    assert maskds(["build", str(synth_data), str(cache), "--size", "40", "30", "--folds", "3", "--num-proc", "1",
                   "--extra", str(folder)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "labels.csv line 2: framing 'aligned'" in err
    assert not cache.exists()


def test_inference_cuts_a_marked_face_as_build_does_and_the_others_with_the_runs_crop(tmp_path):
    from maskds.core.faces import FACE_IMAGE
    from maskds.core.images import cached_pixels
    from maskds.inference.predict import EvalImages

    paths = [striped_face(tmp_path / "a.jpg"), striped_face(tmp_path / "b.jpg")]
    crop = ("fixed", 0.15)
    ds = EvalImages(paths, (80, 60), [lambda image: {"image": image}], crop, face_images=frozenset({0}))
    marked, plain = ds[0][1][0], ds[1][1][0]
    assert np.array_equal(marked, cached_pixels(paths[0], (80, 60), (FACE_IMAGE, 0.0)))
    assert np.array_equal(plain, cached_pixels(paths[1], (80, 60), crop))
    assert not np.array_equal(marked, plain)


def test_pseudo_labelling_marked_faces_keeps_the_mark(tmp_path):
    from test_inference import make_run

    src = tmp_path / "utk"
    striped_face(src / "25_0_0_20170109150557335.jpg.chip.jpg")
    striped_face(src / "41_1_0_20170109150557336.jpg.chip.jpg")
    faces = tmp_path / "faces"
    assert maskds(["import-faces", str(src), str(faces), "--format", "utkface", "--frame", "crop",
                   "--num-proc", "1"]) == 0
    out = tmp_path / "labelled"
    assert maskds(["pseudo", "--faces", str(faces), "--run", str(make_run(tmp_path / "run")), str(out),
                   "--min-prob", "0.01", "--tta", "none", "--heads", "mask"]) == 0
    df = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)
    assert df.framing.tolist() == ["face", "face"]
