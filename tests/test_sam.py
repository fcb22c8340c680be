"""SAM: the gradient at the weights pushed uphill, weights restored, BatchNorm statistics updated once."""
from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from maskds.core.errors import UserError
from maskds.config.keys import TrainConfig
from maskds.training.sam import sam_backward

from train_helpers import ACCEL, ROOT, TINY, env, free_port, launch, metrics_lines


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
        assert torch.equal(p, before[name]), name  # weights restored exactly
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


_RANKS_STEP = textwrap.dedent("""
    import sys
    import torch
    from accelerate import Accelerator
    from torch import nn
    from maskds.training.sam import sam_backward

    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = acc.prepare(model, optimizer)
    data = torch.Generator().manual_seed(1 + acc.process_index)  # each process its own batches
    for _ in range(int(sys.argv[2])):
        x, y = torch.randn(8, 16, generator=data), torch.randint(0, 3, (8,), generator=data)
        sam_backward(acc, model, model, nn.CrossEntropyLoss(), x, y, rho=0.05)
        optimizer.step()
        optimizer.zero_grad()
    torch.save(acc.unwrap_model(model).state_dict(), f"{sys.argv[1]}/rank{acc.process_index}.pt")
""")


@pytest.mark.slow
def test_sam_keeps_the_weights_bit_identical_on_every_process(tmp_path):
    # Restoring by `p -= u` after `p += u` is not exact in float32, and each process has its own u:
    # the processes' weights drifted apart (16 of 1,283 parameters after one step).
    script = tmp_path / "ranks_step.py"
    script.write_text(_RANKS_STEP)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCEL / "cpu_2proc.yaml"),
           "--main_process_port", str(free_port()), str(script), str(tmp_path), "20"]
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    zero, one = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert zero.keys() == one.keys()
    differing = {k: int((zero[k] != one[k]).sum()) for k in zero if not torch.equal(zero[k], one[k])}
    assert not differing, differing
