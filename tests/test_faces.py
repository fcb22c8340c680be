"""Face crops: MTCNN (facenet-pytorch's shipped weights) on a real photograph, the fixed fallback, the crop's
shape, and the same crop at build and at inference."""
from __future__ import annotations

import shutil
import subprocess
import sys

import datasets
import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from maskds.cli.main import main as maskds
from maskds.core import faces, images
from maskds.data.cache import load_cache

from train_helpers import ROOT, TINY, env, launch

# A real photograph that ships with an installed package (matplotlib's sample data): Grace Hopper,
# 512x600, her face at about (174, 120)-(356, 340).
HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
HOPPER_FACE = (174, 120, 356, 340)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_mtcnn_finds_the_face_in_a_real_photograph():
    box = faces.detect(images.open_rgb(HOPPER))
    assert box is not None and iou(box, HOPPER_FACE) > 0.7


def test_no_face_falls_back_to_the_fixed_upper_centre_box():
    blank = Image.new("RGB", (384, 512), (128, 128, 128))
    crop, box, found = faces.face_crop(blank, "mtcnn", (160, 120))
    assert not found and box == pytest.approx(list(faces.FIXED_BOX))
    assert faces.face_crop(blank, "fixed", (160, 120))[1:] == (box, False)


def black_share(crop: Image.Image) -> float:
    return float((np.asarray(crop).max(axis=2) == 0).mean())


@pytest.mark.parametrize("width, height", [(512, 384), (384, 384), (384, 768)])
def test_the_fixed_box_follows_photos_of_another_shape_than_3_to_4(width, height):
    # The box is placed in the photo's centred 3:4 window: a 512x384 landscape photo's crop was 32% black.
    portrait, _, _ = faces.face_crop(Image.new("RGB", (384, 512), "white"), "fixed", (160, 120))
    crop, box, _ = faces.face_crop(Image.new("RGB", (width, height), "white"), "fixed", (160, 120))
    assert black_share(crop) <= black_share(portrait) + 0.005
    assert abs((box[0] + box[2]) / 2 - 0.5) < 1e-9  # still centred across the photo
    assert crop.height / crop.width == pytest.approx(160 / 120, rel=0.02)


def test_the_fixed_box_of_a_3_to_4_photo_is_the_fixed_fractions():
    box = faces.fixed_box(Image.new("RGB", (384, 512)))
    assert box == pytest.approx((0.18 * 384, 0.17 * 512, 0.82 * 384, 0.64 * 512))


@pytest.mark.parametrize("size_hw", [(160, 120), (120, 160), (100, 100)])
def test_the_crop_holds_the_face_with_its_margin_in_the_cache_shape(size_hw):
    left, top, right, bottom = faces.crop_region(HOPPER_FACE, size_hw, margin=0.2)
    assert (bottom - top) / (right - left) == pytest.approx(size_hw[0] / size_hw[1], abs=0.02)
    w, h = HOPPER_FACE[2] - HOPPER_FACE[0], HOPPER_FACE[3] - HOPPER_FACE[1]
    assert left <= HOPPER_FACE[0] - 0.2 * w + 1 and right >= HOPPER_FACE[2] + 0.2 * w - 1
    assert top <= HOPPER_FACE[1] - 0.2 * h + 1 and bottom >= HOPPER_FACE[3] + 0.2 * h - 1


def data_with_a_real_face(root, synth_data):
    """A copy of the synthetic layout whose first person's mask1 is the photograph (a real face)."""
    data = root / "data"
    shutil.copytree(synth_data, data)
    target = sorted((data / "train" / "images").glob("*/mask1.jpg"))[0]
    Image.open(HOPPER).convert("RGB").resize((384, 450)).save(target)
    return data, target


def test_build_crops_faces_records_boxes_and_lists_the_fallbacks(tmp_path, synth_data, capsys):
    data, photo = data_with_a_real_face(tmp_path, synth_data)
    cache = tmp_path / "cache"
    assert maskds(["build", str(data), str(cache), "--size", "64", "48", "--folds", "3", "--num-proc", "1",
                   "--face-crop", "mtcnn", "--face-margin", "0.2"]) == 0
    out = capsys.readouterr().out
    dsd, meta = load_cache(cache)
    train = dsd["train"]
    row = train["path"].index(str(photo.relative_to(data)))
    assert train[row]["face_found"] and iou([v * s for v, s in zip(train[row]["face_box"], (384, 450) * 2)],
                                            [v * 384 / 512 if i % 2 == 0 else v * 450 / 600
                                             for i, v in enumerate(HOPPER_FACE)]) > 0.6
    assert meta["args"]["face_crop"] == ["mtcnn", 0.2]
    face = meta["face_crop"]
    assert face["found"] + face["fallback"] == len(train) + len(dsd["eval"])
    assert face["fallback"] == sum(not f for f in train["face_found"]) + sum(not f for f in dsd["eval"]["face_found"])
    flat = "".join(out.split())  # rich wraps long lines
    assert "fellbacktothefixedupper-centrecrop" in flat and "".join(face["fallback_paths"][0].split()) in flat
    # the cache holds exactly what inference computes from the photo with the same crop
    stored = images.decode_cached(train.cast_column("image", datasets.Image(decode=False))[row]["image"]["bytes"])
    np.testing.assert_array_equal(stored, images.cached_pixels(photo, (64, 48), ("mtcnn", 0.2)))


@pytest.mark.parametrize("args,message", [
    (["--face-crop", "haar"], "--face-crop must be one of none, fixed, mtcnn"),
    (["--face-crop", "fixed", "--face-margin", "-1"], "--face-margin must be in [0, 2]"),
])
def test_bad_face_crop_arguments_are_refused(tmp_path, synth_data, capsys, args, message):
    assert maskds(["build", str(synth_data), str(tmp_path / "c"), *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_a_face_cropped_run_says_so_and_inference_crops_the_same_way(tmp_path, synth_data):
    cache = tmp_path / "cache"
    assert maskds(["build", str(synth_data), str(cache), "--size", "64", "48", "--folds", "3", "--num-proc", "1",
                   "--face-crop", "fixed"]) == 0
    run = launch(["--config", str(ROOT / "configs/demo.yaml"), f"cache={cache}", f"output_dir={tmp_path}", "name=crop",
                  "folds=[0]", "epochs=1", "batch_size=4", *TINY], "cpu_2proc.yaml")  # 2 processes
    assert run.returncode == 0, run.stderr[-3000:]
    assert "face_crop: this recipe" not in run.stdout  # the crop configs/demo.yaml was measured with
    from maskds.inference.models import view_params
    from maskds.model.checkpoint import read_best

    best = read_best(tmp_path / "crop" / "fold0" / "best.safetensors")
    assert best.resolved["face_crop"] == ["fixed", 0.15]
    assert view_params(best.resolved, "x").crop == ("fixed", 0.15)
    eval_dir = synth_data / "eval"
    stored = load_cache(cache)[0]["eval"].cast_column("image", datasets.Image(decode=False))[0]
    from maskds.inference.predict import EvalImages

    seen = EvalImages([eval_dir / stored["path"].split("/", 1)[1]], (64, 48), [lambda image: {"image": image}],
                      ("fixed", 0.15))[0][1][0]
    np.testing.assert_array_equal(seen, images.decode_cached(stored["image"]["bytes"]))  # the pixels trained on
    out = tmp_path / "sub.csv"
    res = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--run", str(tmp_path / "crop"), "--data",
                          str(eval_dir), "--out", str(out), "--num-workers", "0"], cwd=ROOT, env=env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.is_file()


def test_a_photo_too_narrow_for_the_detector_falls_back_instead_of_failing():
    assert faces.detect(Image.new("RGB", (3000, 300), (90, 90, 90))) is None


def test_a_cache_built_with_a_crop_is_not_reused_for_a_build_without_one(tmp_path, synth_data, capsys):
    cache = tmp_path / "cache"
    common = ["build", str(synth_data), str(cache), "--size", "32", "24", "--folds", "3", "--num-proc", "1"]
    assert maskds([*common, "--face-crop", "fixed"]) == 0
    assert "boxofachest-upportrait,foreveryphoto" in "".join(capsys.readouterr().out.split())  # no "fallbacks"
    assert maskds(common) == 2
    assert "face_crop: cache has ['fixed', 0.15], this build asks for None" in capsys.readouterr().err
