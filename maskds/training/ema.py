"""The EMA of the weights: timm's ModelEmaV3 with its per-update bookkeeping done once."""
from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn


class FastEma(ModelEmaV3):
    """ModelEmaV3 (decay, warm-up, state_dict, checkpointing unchanged) whose update pairs the tensors once.

    timm rebuilds both state dicts and walks them in Python on every update, and copies each
    integer buffer (BatchNorm's `num_batches_tracked`) with its own kernel: about a thousand small
    operations per step for EfficientNet-B3. Here the float tensors of both models are paired on the
    first update and kept (parameters and buffers are updated in place by the optimizer, BatchNorm,
    `load_state_dict` and accelerate's `load_state`, so the pairs stay valid), and every update is
    one `_foreach_lerp_` plus one `_foreach_copy_`. The EMA holds fp32 weights of an fp32 model
    (mixed precision autocasts activations only), so timm's bf16 stochastic rounding never applies.
    """

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__(model, **kwargs)
        self._model_id: int | None = None
        self._pairs: tuple[list, list, list, list] | None = None

    def _pair(self, model: nn.Module) -> tuple[list, list, list, list] | None:
        """(EMA floats, model floats, EMA others, model others), or None where timm's path is needed."""
        ema_sd, model_sd = self.module.state_dict(), model.state_dict()
        if list(ema_sd) != list(model_sd):
            raise ValueError("the EMA and the model have different state_dict keys")
        floats = [k for k, v in ema_sd.items() if v.is_floating_point()]
        others = [k for k, v in ema_sd.items() if not v.is_floating_point()]
        same = all(ema_sd[k].dtype == model_sd[k].dtype and ema_sd[k].device == model_sd[k].device for k in floats)
        if not (same and self.foreach and not self.exclude_buffers and self.device is None):
            return None  # a bf16 model, an EMA on another device: timm's casting path
        return ([ema_sd[k] for k in floats], [model_sd[k].detach() for k in floats],
                [ema_sd[k] for k in others], [model_sd[k] for k in others])

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        if self._model_id != id(model):
            self._model_id, self._pairs = id(model), self._pair(model)
        if self._pairs is None:
            return super().apply_update_(model, decay)
        ema_f, model_f, ema_o, model_o = self._pairs
        torch._foreach_lerp_(ema_f, model_f, weight=1.0 - decay)
        if ema_o:
            torch._foreach_copy_(ema_o, model_o)
