"""Images held decoded on the training device: decode, loader batches, augmentation seeds, 2-process training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from maskds.training.batch_augment import PARAMS, draw_batch
from maskds.training.datasets import CachedImages, fold_split, load_train_split, make_loader
from maskds.training.device_images import (
    DeviceBatches,
    SampleParams,
    decode_to_device,
    images_bytes,
    use_device_images,
)
from maskds.model.transforms import eval_transform

from train_helpers import ROOT, TINY, launch, metrics_lines


@pytest.fixture(scope="module")
def table(tiny_cache):
    return load_train_split(tiny_cache)[0]


@pytest.mark.parametrize("size", [(64, 48), (40, 32)])
def test_decoded_images_are_the_pixels_the_cpu_loader_gives(table, size):
    """At the cache size exactly the CPU path's pixels; at another size its bilinear resize, to rounding."""
    rows = fold_split(table, 0).val[:6]
    on_device = decode_to_device(table, rows, size, torch.device("cpu"))
    cpu = CachedImages(table, rows, np.zeros(len(table), np.int64), eval_transform(size), seed=None)
    expected = torch.stack([cpu[i][0] for i in range(len(rows))])
    assert on_device.dtype == torch.uint8 and on_device.shape == (6, 3, *size)
    diff = (on_device.int() - expected.int()).abs()
    assert diff.max() == 0 if size == (64, 48) else diff.float().mean() < 1.0


def test_auto_keeps_images_off_the_cpu_and_true_or_false_are_obeyed():
    cpu = torch.device("cpu")
    assert not use_device_images("auto", cpu, 10, (64, 48))
    assert use_device_images(True, cpu, 10, (64, 48)) and not use_device_images(False, cpu, 10, (64, 48))
    assert images_bytes(18900, (384, 288)) == 18900 * 3 * 384 * 288  # 6.3 GB: the competition's train set


def test_sample_params_draw_per_sample_so_any_sharding_sees_the_same_augmentation():
    labels = np.arange(10)
    ds = SampleParams(labels, "medium", seed=7)
    ds.set_epoch(3)
    whole = ds.__getitems__(list(range(10)))
    shard = ds.__getitems__([8, 2, 5])  # what one of several processes might get
    for i, params, label in shard:
        assert torch.equal(params, whole[i][1]) and label == labels[i]
    assert torch.equal(torch.stack([p for _, p, _ in whole]), draw_batch("medium", 7, 3, range(10)))
    ds.set_epoch(4)
    assert not torch.equal(ds.__getitems__([2])[0][1], whole[2][1])  # each epoch draws anew
    assert SampleParams(labels, None)[3][1].shape == (1,)  # validation: no parameters


def test_device_batches_index_augment_and_move_targets(table):
    rows = fold_split(table, 0).train[:8]
    images = decode_to_device(table, rows, (64, 48), torch.device("cpu"))
    labels = np.stack([np.arange(8), np.arange(8) + 20], axis=1)  # (class, age) rows
    loader = make_loader(SampleParams(labels, "medium", seed=1), 4, False, 0, torch.device("cpu"))
    acc = Accelerator(cpu=True)
    batches = DeviceBatches(acc.prepare_data_loader(loader, device_placement=False), images, True, True)
    assert len(batches) == 2
    (x, y), _ = list(batches)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, torch.from_numpy(labels[:4]))
    plain = DeviceBatches(acc.prepare_data_loader(loader, device_placement=False), images, False, False)
    assert torch.equal(next(iter(plain))[0], images[:4])  # validation: the decoded pixels as they are
    assert PARAMS == draw_batch("medium", 0, 0, [0]).shape[1]


@pytest.mark.slow
def test_two_processes_train_with_images_on_the_device(tiny_cache, tmp_path):
    """Under 2 gloo processes: loaders unplaced, indices sharded, validation gathered to the exact count."""
    args = ["--config", str(ROOT / "configs/demo.yaml"), f"cache={tiny_cache}", f"output_dir={tmp_path}",
            "name=dev", "folds=[0]", "epochs=2", "batch_size=4", *TINY, "images_on_device=true", "augment=medium"]
    r = launch(args, "cpu_2proc.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = metrics_lines(tmp_path / "dev" / "fold0")
    n_val = len(fold_split(load_train_split(tiny_cache)[0], 0).val)
    assert [m["ema"]["n"] for m in lines] == [n_val, n_val] and all(m["raw"] is None for m in lines)
    assert lines[1]["train_loss"] < lines[0]["train_loss"]
