"""Fold models rebuilt from their checkpoints, predicted with TTA on eval images decoded once, sharded by process."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.errors import UserError
from ..core.probabilities import HEAD_TYPES, probabilities
from ..core.images import cached_pixels
from .voting import KEYS, WIDTHS, Probs, combine_folds


@dataclass(frozen=True)
class ViewParams:
    """What a model's input depends on; models with equal ViewParams share one transformed batch."""

    cache_size: tuple[int, int]   # (H, W) images are decoded and resized to once, as at build
    image_size: tuple[int, int]   # (H, W) the model sees (normalization is inside the model)


@dataclass
class Member:
    """One fold's model, ready to predict."""

    run: int
    fold: int
    path: Path
    head: str
    view: ViewParams
    model: nn.Module


def make_accelerator():
    """Accelerator for inference: process count and precision come from the launch config.

    `cpu=use_cpu()`: without it a multi-process launch on a machine with no accelerator comes up
    as N independent single processes, each predicting everything (see `maskds.core.distributed`).
    """
    from accelerate import Accelerator

    from ..core.distributed import use_cpu

    return Accelerator(cpu=use_cpu())


def view_params(resolved: dict, where: str | Path) -> ViewParams:
    """The eval transform's parameters from a checkpoint's `resolved` metadata (never the command line)."""
    try:
        return ViewParams(
            cache_size=(int(resolved["cache_size"][0]), int(resolved["cache_size"][1])),
            image_size=(int(resolved["image_size"][0]), int(resolved["image_size"][1])),
        )
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise UserError(f"checkpoint {where}: its 'resolved' metadata lacks or garbles {err}; "
                        "it was not written by this version of maskds' train.py") from None


def build_transform(view: ViewParams):
    """The eval transform the model was validated with: `transforms.eval_transform`, as training calls it."""
    from ..training.transforms import eval_transform

    return eval_transform(list(view.image_size))


def load_member(run: int, fold: int, path: Path, device: torch.device) -> Member:
    """Rebuild a fold's model from its checkpoint metadata and load the (EMA) weights."""
    from ..training.checkpoint import read_best
    from ..training.model import create_model

    best = read_best(path)
    view = view_params(best.resolved, path)
    name, head = best.resolved.get("model"), best.resolved.get("head")
    if not isinstance(name, str) or head not in HEAD_TYPES:
        raise UserError(f"checkpoint {path}: metadata names no valid model/head (model={name!r}, head={head!r})")
    # pretrained="none": the checkpoint holds every weight, and inference never touches a hub.
    model = create_model(name, head, pretrained="none", mean=best.resolved.get("mean"), std=best.resolved.get("std"))
    try:
        model.load_state_dict(best.state_dict, strict=True)
    except RuntimeError as err:
        raise UserError(f"checkpoint {path}: its weights do not fit model {name!r} ({head}): "
                        f"{str(err).splitlines()[0]}") from None
    model.to(device).eval()
    return Member(run, fold, path, head, view, model)


def check_heads(members: list[Member]) -> None:
    """Each run must use one head type across its folds (combine_folds needs one rule per run)."""
    for run in sorted({m.run for m in members}):
        heads = {m.head for m in members if m.run == run}
        if len(heads) > 1:
            paths = ", ".join(str(m.path) for m in members if m.run == run)
            raise UserError(f"run {run + 1} mixes head types {sorted(heads)} across its folds ({paths}); "
                            "predict each head type separately and ensemble their probability files")


class EvalImages(Dataset):
    """Eval images decoded and resized to one cache size once; every eval transform applied to that decode.

    Item: (index, [tensor per transform], problem). Models that share a transform share its tensor.
    An image whose pixels cannot be decoded (its header was checked up front) yields a blank image and
    a problem text instead of raising inside a worker: every process then reports it after the gather,
    where no process is left waiting for the others.
    """

    def __init__(self, paths: list[Path], cache_size: tuple[int, int], transforms: list):
        self.paths, self.cache_size, self.transforms = paths, cache_size, transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # The pixels training saw: build's decode + resize + JPEG, decoded as the training loader does.
        problem = ""
        try:
            arr = cached_pixels(self.paths[i], self.cache_size)
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


def forward_views(model: nn.Module, x: torch.Tensor, head: str, views: int, autocast) -> Probs:
    """One model's probabilities averaged over TTA views (view 2: the batch flipped left-right)."""
    total = None
    for v in range(views):
        with autocast():
            logits = model(x if v == 0 else torch.flip(x, dims=[-1]))
        p = probabilities(logits, head)
        total = p if total is None else {k: total[k] + p[k] for k in KEYS}
    return {k: (total[k] / views).cpu().numpy() for k in KEYS}


def _progress(accelerator, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not accelerator.is_main_process)
    return bar, bar.add_task(f"predicting on {accelerator.num_processes} process(es)", total=total)


@torch.inference_mode()
def predict_shard(members: list[Member], paths: list[Path], accelerator, batch_size: int,
                  num_workers: int, views: int) -> tuple[np.ndarray, list[Probs], list[str]]:
    """This process's images: (their indices, per member the probabilities averaged over views, problems)."""
    batches = shard_batches(len(paths), batch_size, accelerator.process_index, accelerator.num_processes)
    caches = sorted({m.view.cache_size for m in members})
    rows: list[list[Probs]] = [[] for _ in members]
    order: list[np.ndarray] = []
    problems: list[str] = []
    bar, task = _progress(accelerator, sum(map(len, batches)) * len(caches))
    with bar:
        for cache_size in caches:  # one decode per image and cache size, shared by all its models
            group = [i for i, m in enumerate(members) if m.view.cache_size == cache_size]
            views_here = list(dict.fromkeys(members[i].view for i in group))
            ds = EvalImages(paths, cache_size, [build_transform(v) for v in views_here])
            loader = DataLoader(ds, batch_sampler=batches, num_workers=num_workers,
                                pin_memory=accelerator.device.type == "cuda")
            for idx, xs, failed in loader:
                problems += [p for p in failed if p]
                if cache_size == caches[0]:  # the batch order is the same for every cache size
                    order.append(idx.numpy())
                for vp, x in zip(views_here, xs):
                    x = x.to(accelerator.device)
                    for i in (i for i in group if members[i].view == vp):
                        m = members[i]
                        rows[i].append(forward_views(m.model, x, m.head, views, accelerator.autocast))
                bar.advance(task, len(idx))
    empty = {k: np.zeros((0, WIDTHS[k]), np.float32) for k in KEYS}
    stacked = [{k: np.concatenate([r[k] for r in rs]) for k in KEYS} if rs else empty for rs in rows]
    return (np.concatenate(order) if order else np.zeros(0, np.int64)), stacked, problems


def predict_runs(members: list[Member], paths: list[Path], accelerator, batch_size: int,
                 num_workers: int, views: int) -> dict[int, Probs]:
    """Every run's probabilities for all images (rows in `paths` order), gathered from every process."""
    from accelerate.utils import gather_object

    idx, probs, problems = predict_shard(members, paths, accelerator, batch_size, num_workers, views)
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
        runs[run] = combine_folds([merged[i] for i in mine], members[mine[0]].head)
    return runs
