"""Fold models rebuilt from their checkpoints, with everything they need to be fed (no training flags)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from maskds.config.plan import FoldModel
from maskds.core.distributed import cpu_precision, use_cpu
from maskds.core.errors import UserError
from maskds.core.labels import DEFAULT_AGE_THRESHOLDS, HEAD_NAMES
from maskds.core.probabilities import HeadSpec
from maskds.inference.fold import fold_batchnorms
from maskds.model.checkpoint import read_best
from maskds.model.network import create_model
from maskds.model.transforms import eval_transform


@dataclass(frozen=True)
class ViewParams:
    """What a model's input depends on; models with equal ViewParams share one transformed batch."""

    cache_size: tuple[int, int]   # (H, W) images are decoded and resized to once, as at build
    image_size: tuple[int, int]   # (H, W) the model sees (normalization is inside the model)
    crop: tuple | None = None     # (method, margin) of the face crop the cache was built with, or None


@dataclass
class Member:
    """One fold's model, ready to predict."""

    run: int
    fold: FoldModel
    path: Path
    spec: HeadSpec
    view: ViewParams
    model: nn.Module
    heads: tuple[str, ...] = HEAD_NAMES  # the heads it learned (a specialist's: some of them)
    channels_last: bool = False  # its weights in channels_last: its input batches are given that layout too


def inference_precision(requested: str = "auto") -> tuple[str, str | None]:
    """(autocast precision, note to show): as requested, or for "auto" the launch config's (`accelerate
    launch`), else bf16 on a CUDA GPU that has it (the models trained under autocast), else none; on the
    CPU, fp32 where bf16 would be emulated, as training does (`cpu_precision`, whose note says so)."""
    if requested == "auto":
        bf16 = not use_cpu() and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        requested = os.environ.get("ACCELERATE_MIXED_PRECISION") or ("bf16" if bf16 else "no")
    if not use_cpu():
        return requested, None
    precision, note = cpu_precision(requested, doing="predicting")
    return precision or requested, note


def make_accelerator(precision: str = "auto") -> Accelerator:
    """Accelerator for inference: process count from the launch config, precision `inference_precision`
    (its note printed once, by the main process).

    `cpu=use_cpu()`: without it a multi-process launch on a machine with no accelerator comes up
    as N independent single processes, each predicting everything (see `maskds.core.distributed`).
    """
    precision, note = inference_precision(precision)
    accelerator = Accelerator(cpu=use_cpu(), mixed_precision=precision)
    if note and accelerator.is_main_process:
        print(note)
    return accelerator


def view_params(resolved: dict, where: str | Path) -> ViewParams:
    """The eval transform's parameters from a checkpoint's `resolved` metadata (never the command line)."""
    try:
        return ViewParams(
            cache_size=(int(resolved["cache_size"][0]), int(resolved["cache_size"][1])),
            image_size=(int(resolved["image_size"][0]), int(resolved["image_size"][1])),
            crop=None if not resolved.get("face_crop") else (str(resolved["face_crop"][0]),
                                                              float(resolved["face_crop"][1])),
        )
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise UserError(f"checkpoint {where}: its 'resolved' metadata lacks or garbles {err}; "
                        "it was not written by this version of maskds' train.py") from None


def head_spec(resolved: dict, where: str | Path) -> HeadSpec:
    """The heads a checkpoint holds (checkpoints from before age heads hold bands)."""
    try:
        return HeadSpec(resolved.get("head"), resolved.get("age_head", "bands"),
                        tuple(resolved.get("age_thresholds", DEFAULT_AGE_THRESHOLDS)))
    except (ValueError, TypeError) as err:
        raise UserError(f"checkpoint {where}: its metadata names no valid heads ({err})") from None


def should_fold(device: torch.device, compile: bool) -> bool:
    """Whether BatchNorm folding pays: measured on an H200 (docs/benchmarks.md 5b), b3 under bf16 ran
    4,716 img/s eager unfolded, 4,366 eager folded, 6,902 compiled unfolded, 9,117 compiled folded; on the
    CPU eager folded runs 1.18x faster. So: when compiling, or off CUDA."""
    return compile or device.type != "cuda"


def use_channels_last(device: torch.device, requested: str = "auto") -> bool:
    """Whether the model and its input batches go channels_last: "on"/"off" as asked; "auto": on CUDA
    (faster convolutions under bf16) and on the CPU, where oneDNN's convolutions prefer it and the default
    layout costs a reorder around each: infer.py's prediction of Lite0 at 160x120 (folded, fp32, 2 cores)
    ran 1.8-1.9x the forwards per second, the same answers (docs/benchmarks.md 10). Elsewhere (MPS, ...) not
    measured: off."""
    if requested != "auto":
        return requested == "on"
    return device.type in ("cuda", "cpu")


def build_transform(view: ViewParams):
    """The eval transform the model was validated with: `transforms.eval_transform`, as training calls it."""
    return eval_transform(list(view.image_size))


def load_member(run: int, fold: FoldModel, path: Path, device: torch.device, compile: bool = False,
                fold_bn: str = "auto", channels_last: str = "auto") -> Member:
    """Rebuild a fold's model from its checkpoint metadata and load the (EMA) weights; `fold_bn` "on": each
    BatchNorm folded into its convolution (`fold.fold_batchnorms`), "auto": when compiling or on the CPU;
    `channels_last`: its weights in that layout (`use_channels_last`: "auto" on CUDA and the CPU), after
    the folding; `compile`: wrapped in `torch.compile`."""
    best = read_best(path)
    view = view_params(best.resolved, path)
    name, spec = best.resolved.get("model"), head_spec(best.resolved, path)
    if not isinstance(name, str):
        raise UserError(f"checkpoint {path}: metadata names no model (model={name!r})")
    # pretrained="none": the checkpoint holds every weight, and inference never touches a hub.
    model = create_model(name, spec, pretrained="none", mean=best.resolved.get("mean"), std=best.resolved.get("std"),
                         image_size=view.image_size)
    try:
        model.load_state_dict(best.state_dict, strict=True)
    except RuntimeError as err:
        raise UserError(f"checkpoint {path}: its weights do not fit model {name!r} ({spec.head}/{spec.age_head}): "
                        f"{str(err).splitlines()[0]}") from None
    model.to(device).eval()
    # Checked on a random batch of the model's input size: a model the folding does not fit stays as is.
    if fold_bn == "on" or (fold_bn == "auto" and should_fold(device, compile)):
        example = torch.randint(0, 256, (2, 3, *view.image_size), dtype=torch.uint8, device=device)
        model, _ = fold_batchnorms(model, example)
    layout = use_channels_last(device, channels_last)
    if layout:  # after the folding: the folded convolutions' new weights take the layout too
        model.to(memory_format=torch.channels_last)
    heads = tuple(h for h in HEAD_NAMES if h in best.resolved.get("heads", HEAD_NAMES))
    return Member(run, fold, path, spec, view, torch.compile(model) if compile else model, heads, layout)


def check_heads(members: list[Member]) -> None:
    """Each run must use one head type across its folds (combine_folds needs one rule per run)."""
    for run in sorted({m.run for m in members}):
        heads = {m.spec.head for m in members if m.run == run}
        if len(heads) > 1:
            paths = ", ".join(str(m.path) for m in members if m.run == run)
            raise UserError(f"run {run + 1} mixes head types {sorted(heads)} across its folds ({paths}); "
                            "predict each head type separately and ensemble their probability files")
