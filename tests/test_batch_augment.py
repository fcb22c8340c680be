"""Batched augmentation: seeded params, exact identity and flips, pixel-space geometry, albumentations parity."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from maskds.training.batch_augment import (
    HOLES,
    PARAM_INDEX,
    PARAMS,
    affine_grid,
    affine_theta,
    augment_batch,
    draw_batch,
    draw_params,
    make_params,
)

H, W = 48, 64  # not square: rotations and translations must stay in pixel space


def _smooth(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8 RGB, smooth enough that bilinear implementations agree to about a level."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _batch(*images: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1) for i in images])


def _aug(image: np.ndarray, **values) -> np.ndarray:
    """augment_batch of one HxWx3 image with make_params(**values), back to HxWx3 float."""
    return augment_batch(_batch(image), make_params(**values)[None])[0].permute(1, 2, 0).numpy()


def _albu(transform: A.BasicTransform | list, image: np.ndarray) -> np.ndarray:
    steps = transform if isinstance(transform, list) else [transform]
    return A.Compose(steps)(image=image)["image"].astype(np.float32)


def _centroid(channel: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[:channel.shape[0], :channel.shape[1]]
    return np.array([(xs * channel).sum(), (ys * channel).sum()]) / channel.sum()


def test_draw_batch_is_seeded_by_seed_epoch_index_and_rows_are_draw_params():
    idx = [5, 0, 17, 3]
    a = draw_batch("strong", 7, 2, idx)
    assert a.dtype == torch.float32 and tuple(a.shape) == (4, PARAMS)
    assert torch.equal(a, draw_batch("strong", 7, 2, idx))
    for j, i in enumerate(idx):
        assert np.array_equal(a[j].numpy(), draw_params("strong", np.random.default_rng([7, 2, i])))
    assert torch.equal(draw_batch("strong", 7, 2, idx[::-1]), a.flip(0))
    assert not torch.equal(draw_batch("strong", 7, 3, idx), a)
    assert not torch.equal(a[0], a[1])


def test_unknown_preset_is_refused_naming_it_and_the_valid_ones():
    for call in (lambda: draw_batch("heavy", 0, 0, [0]), lambda: draw_params("heavy", np.random.default_rng(0))):
        with pytest.raises(ValueError, match="'heavy'") as err:
            call()
        assert all(name in str(err.value) for name in ("none", "light", "medium", "strong"))


def test_none_is_the_exact_identity():
    images = _batch(_smooth(seed=1), _smooth(seed=2))
    out = augment_batch(images, draw_batch("none", 0, 0, [0, 1]))
    assert out.dtype == torch.float32 and torch.equal(out, images.float())


def test_flip_mirrors_exactly():
    image = _smooth()
    image[:, : W // 4] = (255, 0, 0)
    assert np.array_equal(_aug(image, flip=1), image[:, ::-1].astype(np.float32))


def test_translation_moves_a_square_right_by_a_tenth_of_the_width():
    image = np.zeros((H, W, 3), np.uint8)
    image[20:28, 20:28] = 255
    shift = _centroid(_aug(image, translate_x=0.1)[..., 0]) - _centroid(image[..., 0].astype(float))
    assert np.allclose(shift, [0.1 * W, 0], atol=0.05)
    shift = _centroid(_aug(image, translate_y=-0.1)[..., 0]) - _centroid(image[..., 0].astype(float))
    assert np.allclose(shift, [0, -0.1 * H], atol=0.05)


def test_rotation_is_a_rotation_in_pixels_about_the_centre_on_a_non_square_image():
    image = np.zeros((H, W, 3), np.uint8)
    cy, cx = H // 2, W // 2  # 2x2 dots centred on pixel corners around (W/2 - 0.5, H/2 - 0.5) + offsets
    image[cy - 1:cy + 1, cx - 1:cx + 1, 0] = 255
    image[cy - 1:cy + 1, cx + 15:cx + 17, 1] = 255
    out = _aug(image, rotate=30)
    centre = np.array([W / 2 - 0.5, H / 2 - 0.5])
    assert np.allclose(_centroid(out[..., 0]), centre, atol=0.05)
    rad = np.deg2rad(30)  # counter-clockwise on screen: y points down, so the dot moves up
    assert np.allclose(_centroid(out[..., 1]), centre + 16 * np.array([np.cos(rad), -np.sin(rad)]), atol=0.1)


def test_affine_theta_of_identity_params_is_the_identity():
    theta = affine_theta(make_params()[None], 384, 288)
    assert torch.allclose(theta, torch.tensor([[[1.0, 0, 0], [0, 1, 0]]]))


def test_affine_grid_equals_torchs():
    params = torch.stack([make_params(flip=1, rotate=8, scale_x=1.1, translate_y=0.05), make_params(rotate=-3)])
    theta = affine_theta(params, 40, 56)
    want = torch.nn.functional.affine_grid(theta, [2, 3, 40, 56], align_corners=False)
    assert torch.allclose(affine_grid(theta, 40, 56), want, atol=1e-6)


def test_flip_then_affine_matches_albumentations():
    image = _smooth(seed=3)
    scale, shift = {"x": (1.05, 1.05), "y": (0.95, 0.95)}, {"x": (0.0625, 0.0625), "y": (-0.0625, -0.0625)}
    want = _albu([A.HorizontalFlip(p=1), A.Affine(scale=scale, translate_percent=shift, rotate=(7, 7),
                                                  border_mode=0, p=1)], image)
    got = _aug(image, flip=1, scale_x=1.05, scale_y=0.95, rotate=7, translate_x=0.0625, translate_y=-0.0625)
    assert np.abs(got - want).max() < 1.0  # OpenCV rounds to uint8


@pytest.mark.parametrize("value", [40, 128, 230])
def test_brightness_contrast_matches_albumentations_on_a_constant_image(value):
    image = np.full((H, W, 3), value, np.uint8)
    want = _albu(A.RandomBrightnessContrast(brightness_limit=(0.1, 0.1), contrast_limit=(0.2, 0.2), p=1), image)
    got = _aug(image, contrast=1.2, brightness=0.1)
    assert np.abs(got - want).max() <= 1.0  # albumentations truncates to uint8


def test_color_jitter_factors_match_albumentations_one_at_a_time():
    image = _smooth(seed=4)
    for name, factor in [("brightness", 1.25), ("contrast", 0.75), ("saturation", 1.3), ("saturation", 0.7)]:
        ranges = {"brightness": (1, 1), "contrast": (1, 1), "saturation": (1, 1), name: (factor, factor)}
        want = _albu(A.ColorJitter(**ranges, hue=(0, 0), p=1), image)
        got = _aug(image, **{f"cj_{name}": factor})
        assert np.abs(got - want).max() <= 1.5, name


def test_color_jitter_order_does_not_matter_within_range():
    image = (60 + _smooth(seed=7) // 2).astype(np.uint8)  # 60..187: no step leaves 0..255
    got = _aug(image, cj_brightness=1.2, cj_contrast=0.8, cj_saturation=1.2)
    for seed in range(4):  # albumentations draws a random order of the three
        jitter = A.ColorJitter(brightness=(1.2, 1.2), contrast=(0.8, 0.8), saturation=(1.2, 1.2), hue=(0, 0), p=1)
        want = A.Compose([jitter], seed=seed)(image=image)["image"].astype(np.float32)
        assert np.abs(got - want).max() <= 2.5  # uint8 rounding after each step


def test_hue_shift_turns_red_towards_orange_by_ten_degrees():
    red = np.zeros((4, 4, 3), np.uint8)
    red[...] = (255, 0, 0)
    out = _aug(red, hue=5)
    r, g, b = out[0, 0]
    assert r == pytest.approx(255) and b == pytest.approx(0) and g > 0
    assert 60 * (g - b) / (r - b) == pytest.approx(10, abs=1e-3)  # HSV hue in degrees, red the largest channel
    assert cv2.cvtColor(out.round().astype(np.uint8), cv2.COLOR_RGB2HSV)[0, 0, 0] == 5  # OpenCV units
    r, g, b = _aug(red, saturation=-20)[0, 0]
    assert (r - min(g, b)) / r == pytest.approx(1 - 20 / 255, abs=1e-4)


def test_hue_saturation_is_close_to_albumentations():
    image = _smooth(seed=5)
    want = _albu(A.HueSaturationValue(hue_shift_limit=(4, 4), sat_shift_limit=(-15, -15), val_shift_limit=0, p=1),
                 image)
    assert np.abs(_aug(image, hue=4, saturation=-15) - want).mean() < 1.5


def test_gray_and_blur_match_albumentations():
    image = _smooth(seed=6)
    assert np.abs(_aug(image, gray=1) - _albu(A.ToGray(p=1), image)).max() <= 1.0
    for ksize in (3, 5):
        want = _albu(A.GaussianBlur(blur_limit=(ksize, ksize), sigma_limit=(1.2, 1.2), p=1), image)
        assert np.abs(_aug(image, blur_sigma=1.2, blur_ksize=ksize) - want).max() <= 1.0


def test_dropout_zeroes_exactly_the_holes():
    image = np.full((H, W, 3), 200, np.uint8)
    out = _aug(image, holes=[(0.25, 0.5, 0.5, 0.75), (0.0, 0.0, 0.125, 0.125)])
    zero = np.zeros((H, W), bool)
    zero[12:24, 32:48] = zero[0:6, 0:8] = True
    assert np.array_equal(out[..., 0] == 0, zero) and (out[~zero] == 200).all()


def test_medium_preset_rates_and_ranges():
    p = draw_batch("medium", 0, 0, range(2000)).numpy()
    col = {name: p[:, i] for name, i in PARAM_INDEX.items()}
    assert abs(col["flip"].mean() - 0.5) < 0.05
    assert abs((col["rotate"] != 0).mean() - 0.7) < 0.05 and np.abs(col["rotate"]).max() <= 10
    assert ((col["scale_x"] >= 0.9) & (col["scale_x"] <= 1.1)).all() and np.abs(col["translate_y"]).max() <= 0.05
    assert abs((col["contrast"] != 1).mean() - 0.7) < 0.05 and np.abs(col["brightness"]).max() <= 0.2
    assert abs((col["hue"] != 0).mean() - 0.3) < 0.05 and np.abs(col["saturation"]).max() <= 20
    assert (col["cj_brightness"] == 1).all() and (col["gray"] == 0).all() and (p[:, HOLES:] == 0).all()


def test_strong_preset_rates():
    p = draw_batch("strong", 1, 0, range(2000)).numpy()
    col = {name: p[:, i] for name, i in PARAM_INDEX.items()}
    assert abs((col["cj_saturation"] != 1).mean() - 0.8) < 0.05 and np.abs(col["hue"]).max() <= 9
    assert abs(col["gray"].mean() - 0.05) < 0.02 and abs((col["blur_sigma"] > 0).mean() - 0.1) < 0.03
    assert set(np.unique(col["blur_ksize"])) == {0, 3, 5} and abs((p[:, HOLES:] != 0).any(1).mean() - 0.3) < 0.05
    assert (col["contrast"] == 1).all()


@pytest.mark.parametrize("augment", ["none", "light", "medium", "strong"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_output_is_float_in_range_same_shape_and_layout_as_asked(augment, channels_last):
    images = _batch(*[_smooth(seed=s) for s in range(8)])
    out = augment_batch(images, draw_batch(augment, 0, 0, range(8)), channels_last=channels_last)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 255
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("augment", ["medium", "strong"])
def test_a_sample_is_augmented_alike_whatever_else_is_in_its_batch(augment):
    images = _batch(*[_smooth(seed=s) for s in range(12)])
    params = draw_batch(augment, 3, 1, range(12))
    together = augment_batch(images, params)
    for i in range(12):
        alone = augment_batch(images[i:i + 1], params[i:i + 1])
        assert torch.allclose(together[i:i + 1], alone, atol=1e-4), i


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("augment", ["medium", "strong"])
def test_cuda_gives_what_the_cpu_gives(augment):
    images = _batch(*[_smooth(seed=s) for s in range(8)])
    params = draw_batch(augment, 0, 0, range(8))
    on_gpu = augment_batch(images.cuda(), params, channels_last=True)
    assert on_gpu.is_cuda and torch.allclose(on_gpu.cpu(), augment_batch(images, params), atol=0.05)
