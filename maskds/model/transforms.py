"""Albumentations presets: train augmentation by strength, and the one eval transform inference rebuilds.

Both end in a uint8 CHW tensor: normalization is the model's first layer (`model.Normalize`), so
loaders ship a quarter of the bytes and no checkpoint can be used with the wrong mean/std.
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2

AUGMENT_PRESETS = ("none", "light", "medium", "strong")


def eval_transform(image_size: Sequence[int]) -> A.Compose:
    """Resize an HxWx3 uint8 RGB image to image_size=(H, W) and return a uint8 CHW tensor."""
    h, w = int(image_size[0]), int(image_size[1])
    return A.Compose([A.Resize(height=h, width=w), ToTensorV2()])


def _augmentations(augment: str) -> list:
    """Augmentations for chest-up face photos, applied after the resize.

    Faces are upright and centred, so: horizontal flips (gender, age and mask are mirror-invariant),
    small shifts/scales/rotations (framing varies a little between phones), colour jitter (lighting
    and mask colours vary), and in `strong` coarse dropout (occluders). Never vertical flips or
    large rotations: an upside-down face is not a photo the model will see.
    """
    if augment == "none":
        return []
    if augment == "light":
        return [A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(0.1, 0.1, p=0.5)]
    geometric = [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), border_mode=0, p=0.7),
    ]
    if augment == "medium":
        # Brightness/contrast (lighting) on most images, hue/saturation (mask colours) on some:
        # close to ColorJitter(0.2, 0.2, 0.2, 0.02) at about a third of its CPU time.
        return [*geometric, A.RandomBrightnessContrast(0.2, 0.2, p=0.7),
                A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=20, val_shift_limit=0, p=0.3)]
    if augment == "strong":
        return [
            *geometric,
            A.ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.8),
            A.ToGray(p=0.05),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                            hole_width_range=(0.05, 0.15), fill=0, p=0.3),
        ]
    raise ValueError(f"augment must be one of {AUGMENT_PRESETS}, got {augment!r}")


def train_transform(image_size: Sequence[int], augment: str) -> A.Compose:
    """Resize to image_size=(H, W), augment by preset (none/light/medium/strong), to a uint8 CHW tensor.

    The Compose keeps its own RNG: the dataset reseeds it per sample and epoch (`maskds.training.datasets.seed_sample`).
    """
    h, w = int(image_size[0]), int(image_size[1])
    return A.Compose([A.Resize(height=h, width=w), *_augmentations(augment), ToTensorV2()])
