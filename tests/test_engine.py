"""Engine tests (one process, in-process): accumulation equals a bigger batch, EMA/scheduler step per update."""
import copy

import pytest
import torch
from accelerate import Accelerator
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, TensorDataset

from maskds.training.engine import evaluate, predict_logits, train_one_epoch
from maskds.training.losses import MaskLoss
from maskds.model.network import create_model
from maskds.training.schedule import Schedule
from maskds.training.state import FoldState, RunProgress


def _data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 64, 48, generator=g), torch.randint(0, 18, (n,), generator=g))


class _CountingEma(ModelEmaV3):
    def __init__(self, model):
        super().__init__(model, decay=0.9, dtype=torch.float32)
        self.steps = []

    def update(self, model, step=None):
        self.steps.append(step)
        super().update(model, step=step)


def _train(model, batch_size, accum, n=16):
    """One epoch of train_one_epoch with SGD (sensitive to gradient scale, unlike Adam)."""
    acc = Accelerator(cpu=True, gradient_accumulation_steps=accum)
    model = copy.deepcopy(model)
    ema = _CountingEma(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = DataLoader(_data(n), batch_size=batch_size, shuffle=False)
    model, opt, loader = acc.prepare(model, opt, loader)
    sched = CosineLRScheduler(opt, t_initial=100, lr_min=0.0, t_in_epochs=False)
    calls = []
    step_update = sched.step_update
    sched.step_update = lambda num_updates: (calls.append(num_updates), step_update(num_updates))
    state = FoldState(model, ema, opt, Schedule(sched, updates_per_epoch=50, total=100), RunProgress(epoch=1))
    result = train_one_epoch(acc, state, MaskLoss("multihead"), loader)
    return acc.unwrap_model(model), ema, result, calls


def test_accumulating_2_batches_of_4_equals_batches_of_8():
    torch.manual_seed(0)
    # ConvNeXt test model: LayerNorm, no BatchNorm, no dropout -> the update depends only on the mean gradient.
    model = create_model("test_convnext", "multihead", drop_rate=0.0)
    small, _, r_small, _ = _train(model, batch_size=4, accum=2)
    big, _, r_big, _ = _train(model, batch_size=8, accum=1)
    assert r_small.updates == r_big.updates == 2
    moved = max((a - b).abs().max().item() for a, b in zip(model.state_dict().values(), big.state_dict().values()))
    assert moved > 1e-3  # the two updates really changed the weights
    for (name, a), b in zip(small.state_dict().items(), big.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name


def test_scheduler_and_ema_advance_once_per_optimizer_update():
    torch.manual_seed(0)
    model = create_model("test_convnext", "multihead", drop_rate=0.0)
    # 20 images, batch 4 -> 5 batches; accumulation 2 -> updates after batches 2, 4 and 5 (end of data).
    # The schedule's clock is epoch 1 x 50 updates per epoch + updates this epoch: set at the epoch's
    # start, then once per update. The EMA counts optimizer updates.
    _, ema, result, calls = _train(model, batch_size=4, accum=2, n=20)
    assert result.updates == 3 and calls == [50, 51, 52, 53] and ema.steps == [1, 2, 3]
    assert result.images == 20 and result.loss > 0


def test_evaluate_and_predict_logits_cover_every_example_once():
    acc = Accelerator(cpu=True)
    model = create_model("test_efficientnet", "single")
    loader = acc.prepare(DataLoader(_data(11), batch_size=4))
    scores, probs = evaluate(acc, acc.prepare(model), loader, "single", MaskLoss("single"))
    assert probs["class"].shape == (11, 18)
    assert scores["n"] == 11 and 0 <= scores["macro_f1"] <= 1 and scores["loss"] > 0
    logits, labels = predict_logits(acc, model, loader)
    assert logits.shape == (11, 18) and labels.tolist() == [int(y) for _, y in _data(11)]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_running_loss_reports_means_on_the_cpu_at_once_and_on_cuda_one_report_late(device):
    from maskds.training.engine import RunningLoss

    running = RunningLoss(torch.device(device))
    running.sum += 6.0
    first = running.report(2)
    running.sum += 6.0
    second = running.report(4)
    if device == "cpu":
        assert first == (2, 3.0) and second == (4, 3.0)
    else:  # the value of the previous report: the loop never waits for the GPU
        assert first is None and second == (2, 3.0)
