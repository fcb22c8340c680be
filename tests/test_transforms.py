"""Transform tests: [H, W] never swapped, presets shaped alike, seeded reproducibility, no vertical flips."""
import albumentations as A
import numpy as np
import pytest
import torch

from maskds.model.transforms import AUGMENT_PRESETS, eval_transform, train_transform


def _photo(h=96, w=72, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_eval_transform_resizes_to_height_width_not_swapped():
    out = eval_transform([64, 48])(image=_photo())["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8  # normalized inside the model
    assert tuple(out.shape) == (3, 64, 48)  # CHW with H=64, W=48: the baseline trained 128x96, predicted 96x128


def test_eval_transform_keeps_the_pixels_as_uint8_chw():
    img = _photo(8, 6)
    out = eval_transform([8, 6])(image=img)["image"]
    assert torch.equal(out, torch.from_numpy(img).permute(2, 0, 1))


@pytest.mark.parametrize("augment", AUGMENT_PRESETS)
def test_every_preset_gives_eval_shaped_tensors_and_no_vertical_flip(augment):
    t = train_transform([64, 48], augment)
    assert tuple(t(image=_photo())["image"].shape) == (3, 64, 48)
    names = {d["__class_fullname__"] for d in A.to_dict(t)["transform"]["transforms"]}
    assert not names & {"VerticalFlip", "Transpose", "RandomRotate90", "D4"}


def test_augment_none_is_the_eval_transform():
    img = _photo()
    a = train_transform([64, 48], "none")(image=img)["image"]
    b = eval_transform([64, 48])(image=img)["image"]
    assert torch.equal(a, b)


def test_seeded_augmentation_repeats_and_other_seeds_differ():
    t = train_transform([64, 48], "strong")
    img = _photo()
    t.set_random_seed(1)
    first = [t(image=img)["image"] for _ in range(3)]
    t.set_random_seed(1)
    again = [t(image=img)["image"] for _ in range(3)]
    t.set_random_seed(2)
    other = [t(image=img)["image"] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="augment"):
        train_transform([64, 48], "extreme")
