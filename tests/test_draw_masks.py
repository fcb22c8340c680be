"""The mask drawer: from a face's five landmarks, a mask over nose and mouth (worn), below the nose (nose
out) or on the chin; a person's seven photos; faces framed where `--face-crop fixed` crops."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from maskds.core.faces import FIXED_BOX
from maskds.external.draw_masks import PORTRAIT, SHAPES, draw_mask, frame_portrait, person_photos

SKIN = (200, 160, 140)
PLAIN = ("plain", (30, 200, 40), (30, 200, 40))  # a green mask: easy to tell from skin
# left eye, right eye, nose, mouth left, mouth right of a 200x200 face
POINTS = np.array([[70, 80], [130, 80], [100, 112], [78, 140], [122, 140]], dtype=np.float32)


def is_mask(img: Image.Image, xy) -> bool:
    r, g, b = img.getpixel(tuple(int(v) for v in xy))
    return g > 150 and r < 90


@pytest.mark.parametrize("shape", SHAPES)
def test_a_worn_mask_covers_nose_and_mouth_and_leaves_the_eyes(shape):
    face = Image.new("RGB", (200, 200), SKIN)
    out = draw_mask(face, POINTS, "correct", PLAIN, shape, np.random.default_rng(0))
    mouth = POINTS[3:].mean(0)
    assert is_mask(out, mouth) and is_mask(out, POINTS[2]) and is_mask(out, (100, mouth[1] + 30))
    assert not is_mask(out, POINTS[0]) and not is_mask(out, POINTS[1]) and not is_mask(out, (100, 40))


def test_an_incorrect_mask_leaves_the_nose_out_or_sits_under_the_mouth():
    face = Image.new("RGB", (200, 200), SKIN)
    rng = np.random.default_rng(0)
    nose_out = draw_mask(face, POINTS, "nose_out", PLAIN, "surgical", rng)
    assert not is_mask(nose_out, POINTS[2]) and is_mask(nose_out, POINTS[3:].mean(0))
    chin = draw_mask(face, POINTS, "chin", PLAIN, "cloth", rng)
    assert not is_mask(chin, POINTS[2]) and not is_mask(chin, POINTS[3:].mean(0)) and is_mask(chin, (100, 175))


def test_a_person_gets_the_competitions_seven_photos_with_five_different_masks():
    face = Image.new("RGB", (200, 200), SKIN)
    photos = person_photos(face, POINTS, np.random.default_rng(1))
    assert list(photos) == ["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"]
    mouth = tuple(int(v) for v in POINTS[3:].mean(0))
    worn = {photos[f"mask{i}"].getpixel(mouth) for i in range(1, 6)}
    assert len(worn) == 5 and SKIN not in worn            # five styles, each over the mouth
    assert photos["normal"].getpixel(mouth) == SKIN         # the bare face
    assert photos["incorrect_mask"].getpixel(tuple(int(v) for v in POINTS[2])) == SKIN  # the nose is out


def test_a_framed_face_fills_the_fixed_crop_box_of_a_competition_photo():
    face = Image.new("RGB", (200, 200), (250, 20, 20))
    photo = frame_portrait(face, np.random.default_rng(0))
    assert photo.size == PORTRAIT
    w, h = PORTRAIT
    cx, cy = (FIXED_BOX[0] + FIXED_BOX[2]) / 2 * w, (FIXED_BOX[1] + FIXED_BOX[3]) / 2 * h
    assert photo.getpixel((int(cx), int(cy)))[0] > 230       # the face at the box's centre
    red = np.asarray(photo)[..., 0] > 230
    ys, xs = np.nonzero(red)
    assert xs.min() > FIXED_BOX[0] * w - 20 and xs.max() < FIXED_BOX[2] * w + 20  # and within the box
    assert ys.min() > FIXED_BOX[1] * h - 20 and ys.max() < FIXED_BOX[3] * h + 20


def red_extent(photo: Image.Image) -> tuple[int, int]:
    """Width and height of the red disc as framed (the darkened, blurred background never reaches r > 230)."""
    rgb = np.asarray(photo).astype(int)
    ys, xs = np.nonzero((rgb[..., 0] > 230) & (rgb[..., 1] < 60))
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


# (face size, red disc's box, landmarks or None): tall and wide faces framed by their middle, and a tall face
# whose landmarks sit near its top, which the middle square would cut through
NOT_SQUARE = [((150, 300), (25, 100, 125, 200), None), ((300, 150), (100, 25, 200, 125), None),
              ((150, 300), (30, 25, 120, 115), np.array([[55, 55], [95, 55], [75, 75], [60, 95], [90, 95]]))]


@pytest.mark.parametrize("size, disc, points", NOT_SQUARE)
def test_a_face_that_is_not_square_is_cut_around_the_face_not_stretched(size, disc, points):
    face = Image.new("RGB", size, SKIN)
    ImageDraw.Draw(face).ellipse(disc, fill=(250, 20, 20))
    rng = np.random.default_rng(0)
    photo = frame_portrait(face, rng) if points is None else frame_portrait(face, rng, centre=points.mean(0))
    width, height = red_extent(photo)
    assert abs(width - height) <= 0.08 * max(width, height), (width, height)  # the disc stays round and whole


def disc_extent(photo: Image.Image, colour: int) -> tuple[int, int]:
    """Width and height of the pure red (colour 0) or blue (colour 2) disc as framed."""
    rgb = np.asarray(photo).astype(int)
    ys, xs = np.nonzero((rgb[..., colour] > 230) & (np.delete(rgb, colour, axis=2) < 60).all(axis=2))
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_a_tall_face_without_landmarks_is_padded_to_a_square_and_kept_whole():
    """No landmarks: nothing says where the face is, so none of it is cut: a 150x300 face whose forehead (red
    disc) and chin (blue disc) fill it keeps both whole and round (the middle square would halve each)."""
    face = Image.new("RGB", (150, 300), SKIN)
    ImageDraw.Draw(face).ellipse((0, 0, 149, 149), fill=(250, 20, 20))
    ImageDraw.Draw(face).ellipse((0, 150, 149, 299), fill=(20, 20, 250))
    photo = frame_portrait(face, np.random.default_rng(0))
    (rw, rh), (bw, bh) = disc_extent(photo, 0), disc_extent(photo, 2)
    assert abs(rw - rh) <= 0.1 * rw and abs(bw - bh) <= 0.1 * bw, (rw, rh, bw, bh)  # whole and round
    assert abs(rw - bw) <= 0.05 * rw  # the same size, one above the other
