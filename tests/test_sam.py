"""SAM: the gradient at the weights pushed uphill, weights restored, BatchNorm statistics updated once."""
from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from maskds.core.errors import UserError
from maskds.training.config import TrainConfig
from maskds.training.sam import sam_backward

from train_helpers import ROOT, TINY, launch, metrics_lines


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_sam_leaves_the_gradient_at_the_perturbed_weights_and_restores_them():
    model, x, y, rho = _net().train(), torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]), 0.05
    loss_fn = nn.CrossEntropyLoss()
    reference = copy.deepcopy(model)  # SAM by hand
    loss_fn(reference(x), y).backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads):
            p.add_(rho * g / norm)
            p.grad = None
    bn = reference[1]
    saved = bn.momentum
    bn.momentum = 0.0
    loss_fn(reference(x), y).backward()
    bn.momentum = saved
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sam_backward(Accelerator(cpu=True), model, model, loss_fn, x, y, rho)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    for name, p in model.named_parameters():
        assert torch.allclose(p, before[name], atol=1e-7), name  # weights restored
    assert model[1].num_batches_tracked == 2 and model[1].momentum == saved
    assert torch.allclose(model[1].running_mean, reference[1].running_mean)  # one statistics update, not two
    assert not torch.allclose(model[1].running_mean, before["1.running_mean"])


def test_sam_with_gradient_accumulation_is_refused_naming_the_keys():
    with pytest.raises(UserError, match="grad_accum_steps=1 or sam_rho=0"):
        TrainConfig.from_dict({"sam_rho": 0.05, "grad_accum_steps": 2})


@pytest.mark.slow
def test_sam_trains_under_two_processes(tiny_cache, tmp_path):
    args = ["--config", str(ROOT / "configs/demo.yaml"), f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=sam",
            "folds=[0]", "epochs=2", "batch_size=8", *TINY, "sam_rho=0.05"]
    r = launch(args, "cpu_2proc.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = metrics_lines(tmp_path / "sam" / "fold0")
    assert len(lines) == 2 and lines[1]["train_loss"] < lines[0]["train_loss"]
