"""Images held decoded in the training device's memory, augmented there batch by batch.

On a GPU the per-image work of the CPU loader (JPEG decode, resize, albumentations) cannot keep up
with the model: 16 cores feed an H100 about as fast as a small EfficientNet trains. So a fold's
images are decoded once (nvJPEG on CUDA) into a uint8 [N, 3, H, W] tensor on the device, 6.3 GB for
all 18,900 competition images at 384x288; the loader then ships only sample indices, labels and
augmentation parameters (drawn from (seed, epoch, index) as `CachedImages` seeds them, so 1 or N
processes see the same augmentation of each sample), and `batch_augment` applies them to the whole
batch on the device. The CPU path (`CachedImages`, albumentations in workers) stays for machines
without a GPU and for data that does not fit.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from maskds.core import images as image_codec
from maskds.training.batch_augment import augment_batch, draw_batch

DECODE_CHUNK = 256          # images per nvJPEG call
DEVICE_SHARE = 0.25         # auto: use the device only if the images fit in this share of its free memory


def images_bytes(n: int, image_size: Sequence[int]) -> int:
    """Bytes of n decoded uint8 RGB images of image_size=(H, W)."""
    return int(n) * 3 * int(image_size[0]) * int(image_size[1])


def use_device_images(setting: bool | str, device: torch.device, n: int, image_size: Sequence[int]) -> bool:
    """The `images_on_device` choice: True/False as set; auto = on CUDA when they fit in DEVICE_SHARE of free memory."""
    if setting != "auto":
        return bool(setting)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return images_bytes(n, image_size) <= DEVICE_SHARE * free


def _fit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[3, h, w] uint8 resized to `size` like the CPU path's A.Resize (bilinear, no antialias), if needed."""
    if tuple(image.shape[-2:]) == size:
        return image
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)[0]


def decode_to_device(table: datasets.Dataset, rows: np.ndarray, image_size: Sequence[int],
                     device: torch.device) -> torch.Tensor:
    """uint8 [len(rows), 3, H, W] on `device`: the cache's JPEG bytes of `rows`, decoded (nvJPEG on CUDA,
    OpenCV otherwise, as the CPU loaders do) and resized to image_size=(H, W) where the cache differs.

    nvJPEG's inverse DCT is not OpenCV's: a pixel can differ by a level or two from what the CPU path
    (and inference, which decodes with OpenCV) sees; training and validation alike see nvJPEG's."""
    size = (int(image_size[0]), int(image_size[1]))
    column = table.select_columns(["image"])
    out = torch.empty((len(rows), 3, *size), dtype=torch.uint8, device=device)
    for start in range(0, len(rows), DECODE_CHUNK):
        chunk = rows[start:start + DECODE_CHUNK]
        raw = [cell["bytes"] for cell in column[[int(r) for r in chunk]]["image"]]
        if device.type == "cuda":
            from torchvision.io import ImageReadMode, decode_jpeg  # the GPU path only

            data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
            # nvJPEG decodes on its own stream: let the previous chunk's copies finish before it reuses memory.
            torch.cuda.current_stream(device).synchronize()
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        else:
            decoded = [torch.from_numpy(image_codec.decode_cached(b)).permute(2, 0, 1) for b in raw]
        for j, image in enumerate(decoded):
            out[start + j] = _fit(image.to(device), size)
    return out


class SampleParams(Dataset):
    """(index, augmentation parameters, target) per training sample: what the loader ships when the
    images are on the device. `augment=None` (validation): no parameters are drawn (zeros)."""

    def __init__(self, labels: np.ndarray, augment: str | None, seed: int = 0, person_draw=None, extra_draw=None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.augment, self.seed, self.person_draw = augment, seed, person_draw  # person_draw: `PersonDraw`
        self.extra_draw = extra_draw  # `ExtraDraw`: the samples past the competition's read the epoch's extra rows
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.labels) if self.extra_draw is None else len(self.extra_draw)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list:
        epoch = int(self._epoch)
        if self.extra_draw is not None:  # sample -> training-row position: the index into the device images
            indices = [self.extra_draw.position(i, epoch) for i in indices]
        params = (draw_batch(self.augment, self.seed, epoch, indices) if self.augment is not None
                  else torch.zeros((len(indices), 1)))
        draw = self.person_draw.labels if self.person_draw is not None else (lambda row, i, e: row)
        labels = [torch.from_numpy(draw(self.labels[i], i, epoch)) if self.labels.ndim == 2 else int(self.labels[i])
                  for i in indices]
        return list(zip(indices, params, labels))


class DeviceBatches:
    """A prepared loader of `SampleParams` turned into (images, targets) batches from `images` on the device.

    Passes `len`, `set_epoch` and iteration state through, so the training loop, accelerate's
    `gather_for_metrics` and the epoch clock treat it as the loader it wraps.
    """

    def __init__(self, loader, images: torch.Tensor, augment: bool, channels_last: bool):
        self.loader, self.images, self.augment, self.channels_last = loader, images, augment, channels_last

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        for index, params, y in self.loader:  # CPU tensors (pinned on CUDA): no sync on the parameters
            x = self.images[index.to(device, non_blocking=True)]
            y = y.to(device, non_blocking=True)
            if self.augment:
                x = augment_batch(x, params, channels_last=self.channels_last)
            elif self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
