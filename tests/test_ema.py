"""FastEma: timm's ModelEmaV3 numbers with the tensors paired once."""
from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn

from maskds.training.ema import FastEma


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    model.train()
    model(torch.randn(4, 3, 8, 8, generator=g)).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def test_fast_ema_matches_timm_model_ema_v3_including_buffers_and_warmup():
    model = _net()
    model.eval()(torch.zeros(1, 3, 8, 8))  # materialize the lazy layer (eval: BatchNorm counts nothing)
    kwargs = dict(decay=0.9, use_warmup=True, warmup_power=1.0, dtype=torch.float32)
    timm_ema, fast = ModelEmaV3(model, **kwargs), FastEma(model, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(1, 6):
        _train_step(model, opt, step)
        timm_ema.update(model, step=step)
        fast.update(model, step=step)
    expected, got = timm_ema.module.state_dict(), fast.module.state_dict()
    assert list(expected) == list(got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert got["1.num_batches_tracked"] == model.state_dict()["1.num_batches_tracked"] == 5


def test_fast_ema_follows_weights_loaded_in_place_after_its_first_update():
    """Resume loads the model's state in place: the paired tensors must see the loaded values."""
    model = _net()
    model(torch.zeros(1, 3, 8, 8))
    ema = FastEma(model, decay=0.0, use_warmup=False)
    ema.update(model, step=10)
    loaded = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(loaded)
    ema.update(model, step=11)  # decay 0: the EMA becomes a copy of the model
    for key, value in ema.module.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
