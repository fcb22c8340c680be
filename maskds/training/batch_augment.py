"""Batched on-device augmentation with per-sample parameters, reproducing the presets of `transforms`.

Runs on uint8 [B, 3, H, W] batches already resized to the training size, on their device, in the presets'
order: flip + affine (one `grid_sample`), brightness/contrast, colour jitter, hue/saturation, gray, blur,
dropout. `draw_batch` draws each sample's parameters on the CPU from a generator seeded by (seed, epoch,
index), so a sample is augmented alike on 1 or N processes; an op not applied has identity parameters.
`PARAM_INDEX` gives the layout (dropout holes from `HOLES` on), `make_params` builds one from values.

Each op's samples and per-sample coefficients are worked out in numpy on the CPU and sent in two small
non-blocking copies: no device->CPU sync per batch (params on a device are copied back: one sync). Ops
touch only their samples (index_select/index_copy_): identity parameters give exactly `images.float()`,
flips are exact, and a sample's result ignores its batch mates (but for float rounding: a jitter-only
sample makes the HSV round trip when a batch mate has a hue shift).

Approximations vs albumentations 2.0.8: all float, no uint8 rounding between ops; Affine translates by
fractional pixels (albumentations: whole ones); HSV is the continuous hexcone model, not OpenCV's 8-bit
one; ColorJitter's brightness, contrast and saturation are one map clipped once (`_color_jitter`), its
hue comes last, not at a random place (hue commutes with brightness and, but for the mean gray, with
contrast); blur has 5 taps, zero beyond the drawn 3 or 5; dropout holes are fractions of H and W.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from maskds.model.transforms import AUGMENT_PRESETS

_NAMES = ("flip", "scale_x", "scale_y", "rotate", "translate_x", "translate_y", "contrast", "brightness",
          "cj_brightness", "cj_contrast", "cj_saturation", "hue", "saturation", "gray",
          "blur_sigma", "blur_ksize")
PARAM_INDEX = {name: i for i, name in enumerate(_NAMES)}
HOLES = len(_NAMES)  # then MAX_HOLES dropout holes as (y0, x0, y1, x1), fractions of H and W; empty = zeros
MAX_HOLES = 4
PARAMS = HOLES + 4 * MAX_HOLES
(_FLIP, _SX, _SY, _ROT, _TX, _TY, _ALPHA, _BETA, _CJB, _CJC, _CJS, _HUE, _SAT, _GRAY,
 _SIGMA, _KSIZE) = range(HOLES)
_IDENTITY = np.zeros(PARAMS, np.float32)
_IDENTITY[[_SX, _SY, _ALPHA, _CJB, _CJC, _CJS]] = 1.0
_UNIFORMS = 40  # drawn per sample whatever the preset and outcomes, so parameters are stable
_GRAY_W = (0.299, 0.587, 0.114)  # OpenCV's RGB2GRAY, as ToGray and ColorJitter use


def _check(augment: str) -> None:
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"augment must be one of {AUGMENT_PRESETS}, got {augment!r}")


def _span(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * u


def _from_uniforms(augment: str, u: np.ndarray) -> np.ndarray:
    """[B, _UNIFORMS] uniforms -> [B, PARAMS] float32, with the presets' probabilities and ranges."""
    p = np.tile(_IDENTITY, (len(u), 1))
    if augment == "none":
        return p
    p[:, _FLIP] = u[:, 0] < 0.5
    limit, on = (0.1, u[:, 7] < 0.5) if augment == "light" else (0.2, u[:, 7] < 0.7)  # RandomBrightnessContrast
    if augment != "strong":
        p[:, _ALPHA] = np.where(on, 1 + _span(u[:, 8], -limit, limit), 1.0)
        p[:, _BETA] = np.where(on, _span(u[:, 9], -limit, limit), 0.0)
    if augment == "light":
        return p
    on = (u[:, 1] < 0.7)[:, None]
    p[:, _SX:_SY + 1] = np.where(on, _span(u[:, 2:4], 0.9, 1.1), 1.0)
    p[:, _ROT:_ROT + 1] = np.where(on, _span(u[:, 4:5], -10, 10), 0.0)
    p[:, _TX:_TY + 1] = np.where(on, _span(u[:, 5:7], -0.05, 0.05), 0.0)
    if augment == "medium":
        on = u[:, 10] < 0.3
        p[:, _HUE] = np.where(on, _span(u[:, 11], -5, 5), 0.0)
        p[:, _SAT] = np.where(on, _span(u[:, 12], -20, 20), 0.0)
        return p
    _strong_colour(p, u)
    return p


def _strong_colour(p: np.ndarray, u: np.ndarray) -> None:
    on = (u[:, 13] < 0.8)[:, None]
    p[:, _CJB:_CJS + 1] = np.where(on, _span(u[:, 14:17], 0.7, 1.3), 1.0)
    p[:, _HUE:_HUE + 1] = np.where(on, 180 * _span(u[:, 17:18], -0.05, 0.05), 0.0)  # OpenCV hue units
    p[:, _GRAY] = u[:, 18] < 0.05
    on = u[:, 19] < 0.1
    p[:, _SIGMA] = np.where(on, _span(u[:, 20], 0.5, 3.0), 0.0)
    p[:, _KSIZE] = np.where(on, np.where(u[:, 21] < 1 / 3, 3, 5), 0)  # randint(3, 5), even sizes bumped up
    h, w = _span(u[:, 24:28], 0.05, 0.15), _span(u[:, 28:32], 0.05, 0.15)
    y0, x0 = u[:, 32:36] * (1 - h), u[:, 36:40] * (1 - w)
    live = (u[:, 22] < 0.3)[:, None] & (np.arange(MAX_HOLES) < 1 + np.floor(4 * u[:, 23:24]))
    p[:, HOLES:] = (np.stack([y0, x0, y0 + h, x0 + w], -1) * live[..., None]).reshape(len(u), -1)


def draw_params(augment: str, rng: np.random.Generator) -> np.ndarray:
    """One sample's float32 [PARAMS] parameters for preset `augment`, from one `rng.random` call."""
    _check(augment)
    return _from_uniforms(augment, rng.random(_UNIFORMS)[None])[0]


def draw_batch(augment: str, seed: int, epoch: int, indices: Sequence[int]) -> torch.Tensor:
    """float32 [B, PARAMS] on the CPU; row j = draw_params(augment, default_rng([seed, epoch, indices[j]]))."""
    _check(augment)
    u = np.empty((len(indices), _UNIFORMS))
    for j, i in enumerate(indices):
        u[j] = np.random.default_rng([seed, epoch, int(i)]).random(_UNIFORMS)
    return torch.from_numpy(_from_uniforms(augment, u))


def make_params(**values: float | Sequence[Sequence[float]]) -> torch.Tensor:
    """float32 [PARAMS] identity parameters with the named values set, e.g. make_params(flip=1, rotate=5).

    Names are `PARAM_INDEX`'s (rotate in degrees, counter-clockwise on screen; translate_* and holes as
    fractions of W and H; brightness as a fraction of 255; cj_* ColorJitter's factors; hue in OpenCV
    units, 180 a turn; saturation added on 0..255) plus `holes`: up to MAX_HOLES (y0, x0, y1, x1).
    """
    p = torch.from_numpy(_IDENTITY.copy())
    for name, value in values.items():
        if name == "holes":
            flat = torch.tensor(value, dtype=torch.float32).flatten()
            p[HOLES:HOLES + len(flat)] = flat
        elif name in PARAM_INDEX:
            p[PARAM_INDEX[name]] = float(value)
        else:
            raise ValueError(f"unknown parameter {name!r}; known: {(*_NAMES, 'holes')}")
    return p


def affine_theta(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, 2, 3] `F.affine_grid` thetas (align_corners=False) for flip, then Affine, of [B, PARAMS] params.

    albumentations maps an input pixel p (centred on the image centre, y down) to T + R S F p with
    R = [[c, s], [-s, c]]; grid_sample needs the inverse, F S^-1 R^T (q - T), taken to normalized
    coordinates by D = diag(2/W, 2/H): so the rotation stays a rotation in pixels when H != W.
    """
    return torch.from_numpy(_theta(params.detach().cpu().numpy(), height, width))


def _theta(p: np.ndarray, height: int, width: int) -> np.ndarray:
    p = p.astype(np.float64)
    f = 1 - 2 * p[:, _FLIP]
    c, s = np.cos(np.deg2rad(p[:, _ROT])), np.sin(np.deg2rad(p[:, _ROT]))
    i00, i01 = f * c / p[:, _SX], -f * s / p[:, _SX]
    i10, i11 = s / p[:, _SY], c / p[:, _SY]
    tx, ty = p[:, _TX] * width, p[:, _TY] * height
    row0 = np.stack([i00, i01 * height / width, -(i00 * tx + i01 * ty) * 2 / width], 1)
    row1 = np.stack([i10 * width / height, i11, -(i10 * tx + i11 * ty) * 2 / height], 1)
    return np.stack([row0, row1], 1).astype(np.float32)


def _plan(p: np.ndarray, height: int, width: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """On the CPU, in numpy (µs an op, where a torch op costs tens): each op's samples and coefficients."""
    geo = (p[:, _SX:_TY + 1] != _IDENTITY[_SX:_TY + 1]).any(1)
    flip = p[:, _FLIP] != 0
    colour = (p[:, _CJB:_SAT + 1] != _IDENTITY[_CJB:_SAT + 1]).any(1)  # ColorJitter, hue, saturation
    masks = {"keep": ~flip & ~geo, "flip": flip & ~geo, "affine": geo, "colour": colour,
             "gray": p[:, _GRAY] != 0, "blur": p[:, _SIGMA] > 0}
    groups = {name: np.flatnonzero(mask) for name, mask in masks.items()}  # sorted
    col, blur = p[groups["colour"]], p[groups["blur"]]
    b, c, s = col[:, _CJB], col[:, _CJC], col[:, _CJS]
    taps = np.arange(-2.0, 3.0)
    kernel = np.exp(-0.5 * (taps / blur[:, _SIGMA:_SIGMA + 1]) ** 2) * (np.abs(taps) <= blur[:, _KSIZE:_KSIZE + 1] // 2)
    rows, cols = (np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width  # pixel centres
    return groups, {  # what the device ops read, per sample of their group
        "theta": _theta(p[groups["affine"]], height, width), "grid_x": 2 * cols - 1, "grid_y": 2 * rows - 1,
        "rbc": np.stack([p[:, _ALPHA], p[:, _BETA] * 255], 1),
        "jitter": np.stack([b * c * s, b * (1 - c), b * c * (1 - s)], 1),  # x, mean gray, gray: see _color_jitter
        "hsv": np.concatenate([[5.0, 3.0, 1.0] + col[:, _HUE:_HUE + 1] / 30, col[:, _SAT:_SAT + 1] / 255], 1),
        "kernel": kernel / kernel.sum(1, keepdims=True), "holes": p[:, HOLES:], "rows": rows, "cols": cols}


def _on(x: torch.Tensor, idx: torch.Tensor, fn: Callable[..., torch.Tensor], *args: object,
        src: torch.Tensor | None = None) -> None:
    """x[idx] = fn(src[idx], *args) in place (src defaults to x); no gather when idx is every sample."""
    src = x if src is None else src
    if idx.numel() == 0:
        return
    if idx.numel() == x.shape[0]:  # then idx is arange(B): nonzero sorts
        out = fn(src, *args)
        if out is not x:
            x.copy_(out)
    else:
        x.index_copy_(0, idx, fn(src.index_select(0, idx), *args).to(x.dtype))


def _col(p: torch.Tensor, i: int) -> torch.Tensor:
    return p[:, i].view(-1, 1, 1, 1)  # one value per sample, broadcast over C, H, W


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0:1] * _GRAY_W[0]).add_(x[:, 1:2], alpha=_GRAY_W[1]).add_(x[:, 2:3], alpha=_GRAY_W[2])


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`F.affine_grid(theta, [n, C, height, width], align_corners=False)`, computed as `augment_batch` does."""
    xs, ys = ((torch.arange(size, dtype=theta.dtype) * 2 + 1) / size - 1 for size in (width, height))
    return _grid(theta, xs.to(theta.device), ys.to(theta.device))


def _grid(theta: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    # Separable (an x part plus a y part): two broadcast ops, where F.affine_grid's batched GEMM with
    # K=3 took twice as long as the grid_sample it feeds on an H100.
    t = theta.transpose(1, 2).unsqueeze(1)  # [n, 1, 3, 2]
    along_x = torch.addcmul(t[:, :, 2:], t[:, :, 0:1], xs.view(1, 1, -1, 1))
    return torch.addcmul(along_x, t[:, :, 1:2], ys.view(1, -1, 1, 1))


def _warp(x: torch.Tensor, theta: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    out = F.grid_sample(x.float(), _grid(theta, xs, ys), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0, 255)


def _colour(x: torch.Tensor, jitter: torch.Tensor, hsv: torch.Tensor, ops: tuple[bool, bool, bool]) -> torch.Tensor:
    """Jitter, then hue/saturation shifts, as ops (any jitter, any hue or saturation, any saturation) say."""
    if ops[0]:
        _color_jitter(x, jitter)
    return _shift_hsv(x, hsv, ops[2]) if ops[1] else x


def _color_jitter(x: torch.Tensor, coef: torch.Tensor) -> None:
    """ColorJitter's brightness b, contrast c and saturation s as one map, clipped once.

    Unclipped they commute (contrast keeps the mean gray of a saturation change: the gray weights sum to 1)
    to b (c (s x + (1 - s) gray) + (1 - c) mean_gray); albumentations clips after each, in a random order.
    """
    gray = _gray(x)
    offset = torch.addcmul(gray.mean((2, 3), keepdim=True) * _col(coef, 1), gray, _col(coef, 2))
    torch.addcmul(offset, x, _col(coef, 0), out=x).clamp_(0, 255)


def _shift_hsv(x: torch.Tensor, coef: torch.Tensor, saturation: bool) -> torch.Tensor:
    """HSV hue and additive saturation shifts of 0..255 floats; coef: R, G, B hue offsets, saturation shift.

    Hue H in hexcone sectors (OpenCV's 180 units are 6): channel c = top - chroma * t(H + offset_c).
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    low, top = torch.aminmax(x, dim=1, keepdim=True)
    delta = top - low
    hue = torch.where(top == r, g - b, torch.where(top == g, torch.add(b - r, delta, alpha=2),
                                                   torch.add(r - g, delta, alpha=4)))
    hue.mul_(delta.clamp_min(1e-6).reciprocal_())  # sectors 0..6 from red; 0 for grays
    chroma = delta  # top * clip(S + shift, 0, 1) with S = delta / top; grays stay gray, as in OpenCV
    if saturation:
        chroma = torch.where(delta > 0, torch.addcmul(delta, top, _col(coef, 3)).clamp_min_(0).minimum(top), 0)
    k = torch.remainder(hue + coef[:, :3].view(-1, 3, 1, 1), 6)
    return torch.addcmul(top, chroma, torch.minimum(k, 4 - k).clamp_(0, 1), value=-1)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian (5 taps, reflect-101 borders as OpenCV) as two depthwise convolutions."""
    n, c, h, w = x.shape
    weight = kernel.repeat_interleave(c, 0)
    y = F.pad(x.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="reflect")
    y = F.conv2d(y, weight.view(n * c, 1, 5, 1), groups=n * c)
    return F.conv2d(y, weight.view(n * c, 1, 1, 5), groups=n * c).view(n, c, h, w).clamp_(0, 255)


def _dropout(x: torch.Tensor, holes: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """Zero the pixels whose centres (rows, cols: 0..1) fall inside any of the sample's holes."""
    y0, x0, y1, x1 = holes.view(-1, MAX_HOLES, 4, 1).unbind(2)  # each [B, holes, 1]
    in_rows, in_cols = (rows >= y0) & (rows < y1), (cols >= x0) & (cols < x1)
    x.masked_fill_((in_rows.unsqueeze(3) & in_cols.unsqueeze(2)).any(1, keepdim=True), 0.0)


def augment_batch(images: torch.Tensor, params: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 [B, 3, H, W] RGB images, [B, PARAMS] params -> augmented float32 [B, 3, H, W] in 0..255.

    Runs on the images' device; pass CPU params (as `draw_batch` returns) to avoid a sync. The result is
    channels_last when asked, written that way from the start.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    n, _, h, w = images.shape
    p = params.detach().to("cpu", torch.float32).numpy()
    if p.shape != (n, PARAMS):
        raise ValueError(f"params must be [{n}, {PARAMS}], got {tuple(p.shape)}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    changed = p != _IDENTITY
    if not changed.any():
        return images.to(torch.float32, memory_format=fmt)
    groups, floats = _plan(p, h, w)
    # Small pageable copies: the driver stages them without waiting for the GPU (pinning a fresh buffer,
    # cudaHostAlloc, would synchronize the device every batch).
    longs = torch.from_numpy(np.concatenate(list(groups.values()))).to(images.device, non_blocking=True)
    idx = dict(zip(groups, torch.split(longs, [len(g) for g in groups.values()])))
    flat = torch.from_numpy(np.concatenate([f.ravel() for f in floats.values()]).astype(np.float32))
    flat = torch.split(flat.to(images.device, non_blocking=True), [f.size for f in floats.values()])
    c = {name: d.view(f.shape) for (name, f), d in zip(floats.items(), flat)}
    x = torch.empty(images.shape, dtype=torch.float32, device=images.device, memory_format=fmt)
    _on(x, idx["keep"], lambda t: t, src=images)  # uint8 gathers: a quarter of the bytes of float ones
    _on(x, idx["flip"], lambda t: t.flip(-1), src=images)
    _on(x, idx["affine"], _warp, c["theta"], c["grid_x"], c["grid_y"], src=images)
    if changed[:, [_ALPHA, _BETA]].any():
        torch.addcmul(_col(c["rbc"], 1), x, _col(c["rbc"], 0), out=x).clamp_(0, 255)
    ops = (changed[:, _CJB:_CJS + 1].any(), changed[:, _HUE:_SAT + 1].any(), changed[:, _SAT].any())
    _on(x, idx["colour"], _colour, c["jitter"], c["hsv"], ops)
    _on(x, idx["gray"], lambda t: _gray(t).expand(-1, 3, -1, -1))
    _on(x, idx["blur"], _blur, c["kernel"])
    if changed[:, HOLES:].any():
        _dropout(x, c["holes"], c["rows"], c["cols"])
    return x
