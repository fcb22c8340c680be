"""What one fold's training changes as it goes: model, EMA, optimizer, schedule and progress."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn
from torch.optim import Optimizer

from maskds.training.ema import FastEma
from maskds.training.schedule import Schedule


@dataclass
class RunProgress:
    """Where a fold's training stands; registered for checkpointing so resume continues from it."""
    epoch: int = 0          # next epoch to run (= epochs done)
    updates: int = 0        # optimizer updates done, across resumes (the EMA warm-up's clock)
    best_f1: float = -1.0   # best EMA 18-class macro F1 so far
    best_epoch: int = -1
    plateau_best: float = -1.0  # scheduler plateau: best validation EMA F1 so far, epochs since, decays
    plateau_bad: int = 0
    plateau_decays: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class FoldState:
    """The training objects of one fold. `model` and `optimizer` are prepared by accelerate (DDP-wrapped
    under several processes); `ema` averages the unwrapped model in fp32. `ema` and `progress` are
    registered for checkpointing; the schedule is rebuilt from `progress.epoch` (see `schedule`).
    `step_model` is `torch.compile(model)` when compiling (it shares the model's parameters): the
    training step calls it, everything else the plain `model`."""
    model: nn.Module
    ema: FastEma
    optimizer: Optimizer
    schedule: Schedule
    progress: RunProgress
    step_model: nn.Module | None = None

    @property
    def forward_model(self) -> nn.Module:
        """What the training step calls: the compiled model if there is one."""
        return self.step_model if self.step_model is not None else self.model
