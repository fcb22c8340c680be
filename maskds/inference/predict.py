"""Sharded prediction: eval images decoded once per cache size, every model and TTA view on each batch,
each process a shard, gathered and soft-voted per run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from maskds.core.errors import UserError
from maskds.core.faces import FACE_IMAGE
from maskds.core.images import cached_pixels
from maskds.core.memory import cpu_memory, loader_worker_init
from maskds.core.probabilities import KEYS, WIDTHS, Probs
from maskds.inference.models import Member, build_transform
from maskds.inference.tta import forward_views
from maskds.inference.voting import combine_folds


class EvalImages(Dataset):
    """Eval images decoded and resized to one cache size once; every eval transform applied to that decode.

    Item: (index, [tensor per transform], problem). Models that share a transform share its tensor.
    An image whose pixels cannot be decoded (its header was checked up front) yields a blank image and
    a problem text instead of raising inside a worker: every process then reports it after the gather,
    where no process is left waiting for the others.
    """

    def __init__(self, paths: list[Path], cache_size: tuple[int, int], transforms: list, crop: tuple | None = None,
                 face_images: frozenset[int] = frozenset()):
        self.paths, self.cache_size, self.transforms, self.crop = paths, cache_size, transforms, crop
        self.face_images = face_images  # indices of images that already are face crops: cut as build cuts them

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # The pixels training saw: build's decode + resize + JPEG, decoded as the training loader does.
        problem = ""
        try:
            crop = (FACE_IMAGE, 0.0) if i in self.face_images else self.crop
            arr = cached_pixels(self.paths[i], self.cache_size, crop)
        except (OSError, ValueError, SyntaxError) as err:  # header parsed up front, pixels broken
            problem = f"{self.paths[i]} cannot be decoded ({err}); replace or re-download it"
            arr = np.zeros((*self.cache_size, 3), dtype=np.uint8)
        return i, [t(image=arr)["image"] for t in self.transforms], problem


def shard_batches(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Global batches of consecutive indices, dealt round-robin to the processes.

    Every image goes to exactly one process (no padding duplicates to drop) and into the same batch
    whatever the process count, so 1 and N processes compute the same numbers.
    """
    batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    return batches[rank::world]


def _progress(accelerator, total: int):
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not accelerator.is_main_process)
    return bar, bar.add_task(f"predicting on {accelerator.num_processes} process(es)", total=total)


def to_model_input(x: torch.Tensor, device: torch.device, batch_size: int, pad: bool,
                   channels_last: bool = False) -> torch.Tensor:
    """A loader batch on the device, channels_last if asked (its models' layout: `Member.channels_last`);
    `pad`: zero images appended up to batch_size, so a compiled model sees one shape (their outputs are
    cut off)."""
    x = x.to(device, non_blocking=True)
    if pad and len(x) < batch_size:
        x = torch.cat([x, x.new_zeros((batch_size - len(x), *x.shape[1:]))])
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.inference_mode()
def predict_shard(members: list[Member], paths: list[Path], accelerator, batch_size: int,
                  num_workers: int, views: tuple[str, ...], pad: bool = False,
                  face_images: frozenset[int] = frozenset()) -> tuple[np.ndarray, list[Probs], list[str]]:
    """This process's images: (their indices, per member the probabilities averaged over views, problems).
    `face_images`: indices of images that already are face crops (`--extra` rows marked `framing: face`)."""
    batches = shard_batches(len(paths), batch_size, accelerator.process_index, accelerator.num_processes)
    caches = sorted({(m.view.cache_size, m.view.crop) for m in members}, key=repr)
    rows: list[list[dict[str, torch.Tensor]]] = [[] for _ in members]
    order: list[np.ndarray] = []
    problems: list[str] = []
    bar, task = _progress(accelerator, sum(map(len, batches)) * len(caches))
    on_cpu = accelerator.device.type == "cpu"
    with bar, cpu_memory(on_cpu):
        for cache in caches:  # one decode per image, cache size and face crop, shared by all its models
            group = [i for i, m in enumerate(members) if (m.view.cache_size, m.view.crop) == cache]
            views_here = list(dict.fromkeys(members[i].view for i in group))
            ds = EvalImages(paths, cache[0], [build_transform(v) for v in views_here], cache[1], face_images)
            loader = DataLoader(ds, batch_sampler=batches, num_workers=num_workers,
                                worker_init_fn=loader_worker_init(on_cpu),
                                pin_memory=accelerator.device.type == "cuda")
            for idx, xs, failed in loader:
                problems += [p for p in failed if p]
                if cache == caches[0]:  # the batch order is the same for every cache size
                    order.append(idx.numpy())
                for vp, x in zip(views_here, xs):
                    mine = [i for i in group if members[i].view == vp]
                    x = to_model_input(x, accelerator.device, batch_size, pad,
                                       any(members[i].channels_last for i in mine))
                    for i in mine:
                        m = members[i]
                        probs = forward_views(m.model, x, m.spec, views, accelerator.autocast)
                        rows[i].append({k: v[:len(idx)] for k, v in probs.items()})
                bar.advance(task, len(idx))
    empty = {k: np.zeros((0, WIDTHS[k]), np.float32) for k in KEYS}
    stacked = [{k: torch.cat([r[k] for r in rs]).cpu().numpy() for k in KEYS} if rs else empty for rs in rows]
    return (np.concatenate(order) if order else np.zeros(0, np.int64)), stacked, problems


def predict_runs(members: list[Member], paths: list[Path], accelerator, batch_size: int,
                 num_workers: int, views: tuple[str, ...], pad: bool = False,
                 face_images: frozenset[int] = frozenset()) -> dict[int, Probs]:
    """Every run's probabilities for all images (rows in `paths` order), gathered from every process.
    `pad`: every batch has batch_size images (for compiled models); `face_images`: see `predict_shard`."""
    idx, probs, problems = predict_shard(members, paths, accelerator, batch_size, num_workers, views, pad,
                                         face_images)
    shards = gather_object([(idx, probs, problems)])  # one (indices, probabilities, problems) per process
    problems = sorted({p for s in shards for p in s[2]})
    if problems:  # raised on every process alike, after the gather
        raise UserError(f"{len(problems)} eval image(s) cannot be decoded; nothing was written", problems)
    all_idx = np.concatenate([s[0] for s in shards])
    if sorted(all_idx.tolist()) != list(range(len(paths))):  # each image exactly once
        raise RuntimeError(f"gathered {len(all_idx)} predictions for {len(paths)} images")
    order = np.argsort(all_idx, kind="stable")
    merged = [{k: np.concatenate([s[1][i][k] for s in shards])[order] for k in KEYS}
              for i in range(len(members))]
    runs = {}
    for run in sorted({m.run for m in members}):
        mine = [i for i, m in enumerate(members) if m.run == run]
        runs[run] = combine_folds([merged[i] for i in mine], members[mine[0]].spec.head)
    return runs
