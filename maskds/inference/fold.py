"""BatchNorm folded into the convolution that feeds it, for inference.

In eval mode a BatchNorm is a per-channel affine map of its input, so when its input is a convolution's
output and nothing else reads that output, the affine map can move into the convolution's weights and
bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`). What is left of the BatchNorm is its activation
(timm's BatchNormAct2d) or nothing. The folded model computes the same function with one pass over
each activation map less, and its weights stay ordinary parameters: a `torch.compile` of one fold's
folded model serves every fold (inductor's `freezing` folds the same way but bakes each fold's weights
into its own compilation).

Which convolution feeds which BatchNorm is read from one traced forward (a tensor a convolution returned
and a BatchNorm received unchanged), not from module names or registration order. That the BatchNorm is
the output's only reader is not traced: the folded model's output is checked against the original's on
that input (in exact float32, without TF32), and a model the rule does not fit is returned unchanged.
"""
from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class _ActOnly(nn.Module):
    """What a folded timm BatchNormAct2d still does: its dropout (identity in eval) and activation."""

    def __init__(self, drop: nn.Module, act: nn.Module):
        super().__init__()
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _remainder(bn: nn.BatchNorm2d) -> nn.Module | None:
    """The module that replaces a folded BatchNorm, or None for a BatchNorm kind we do not know."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop"):
        return _ActOnly(bn.drop, bn.act)
    return None


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution name, BatchNorm name) pairs where the BatchNorm's input is the convolution's output,
    each module called once in a forward of `example`."""
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    produced: dict[int, tuple[nn.Module, torch.Tensor, int]] = {}  # id -> (conv, its output, output version)
    calls: dict[nn.Module, int] = {}
    seen: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(module, _inputs, output):
        calls[module] = calls.get(module, 0) + 1
        produced[id(output)] = (module, output, output._version)  # held: its id is not reused

    def before_bn(module, inputs):
        calls[module] = calls.get(module, 0) + 1
        hit = produced.get(id(inputs[0]))
        # The same tensor, not changed in place since (an in-place activation between them would be)
        if hit is not None and hit[1] is inputs[0] and hit[2] == inputs[0]._version:
            seen.append((hit[0], module))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    convs = [c for c, _ in seen]
    return [(names[c], names[b]) for c, b in seen
            if calls[c] == 1 and calls[b] == 1 and convs.count(c) == 1 and b.track_running_stats
            and b.running_mean is not None and _remainder(b) is not None]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _max_gap(a, b) -> float:
    """The largest absolute difference between two outputs, relative to the first's largest value."""
    if isinstance(a, torch.Tensor):
        return float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-6))
    if isinstance(a, dict):
        return max((_max_gap(a[k], b[k]) for k in a), default=0.0)
    return max((_max_gap(x, y) for x, y in zip(a, b)), default=0.0)


@contextmanager
def _exact_float32():
    """Convolutions and matmuls in full float32 (CUDA would use TF32, whose rounding differs between the
    folded and the original weights by more than the check allows)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def fold_batchnorms(model: nn.Module, example: torch.Tensor, tolerance: float = 1e-4) -> tuple[nn.Module, int]:
    """(a copy of `model` with every BatchNorm folded into the convolution before it, how many were folded).

    `model` must be in eval mode; `example` is an input batch of its kind (its values do not matter).
    The copy's output on `example` must match the original's within `tolerance` (relative to the output's
    largest value, computed in float32), else `model` itself comes back with 0.
    """
    if model.training:
        raise ValueError("fold_batchnorms needs a model in eval mode (model.eval())")
    pairs = conv_bn_pairs(model, example)
    if not pairs:
        return model, 0
    folded = copy.deepcopy(model)
    for conv_name, bn_name in pairs:
        bn = folded.get_submodule(bn_name)
        _set(folded, conv_name, fuse_conv_bn_eval(folded.get_submodule(conv_name), bn))
        _set(folded, bn_name, _remainder(bn))
    with torch.no_grad(), _exact_float32():
        gap = _max_gap(model(example), folded(example))
    if not gap <= tolerance:  # NaN too
        warnings.warn(f"BatchNorms not folded: the folded model's output differed by {gap:.2g} (relative); "
                      "the model is used as trained", stacklevel=2)
        return model, 0
    return folded, len(pairs)
