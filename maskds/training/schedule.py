"""The learning-rate schedule: timm's warmup + a timm schedule (cosine by default) over optimizer updates,
on an epoch-based clock.

The clock is `epoch x updates_per_epoch + updates this epoch`, with `updates_per_epoch` from the loader
this run has. Nothing of it is saved: a run resumed under another process count (other updates per
epoch) rebuilds it from the epochs done, continues at the same point of the curve and ends at `min_lr`
on its last update, where a restored scheduler sized for the old count would stop short.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from timm.scheduler import CosineLRScheduler, create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from maskds.config.checks import SCHEDULERS

# timm's schedules, functions of the update count, and plateau: constant after the warmup, times
# decay_rate each time the validation EMA macro F1 has not improved for patience_epochs epochs.


def batches_per_epoch(loader_len: int, limit: int, accum: int) -> int:
    """Batches each process trains per epoch; a limit is rounded up to whole accumulation cycles."""
    if not limit:
        return loader_len
    return min(loader_len, math.ceil(limit / accum) * accum)


@dataclass
class Schedule:
    """A timm scheduler stepped once per optimizer update (never through accelerate's `prepare`, whose
    wrapper would step it once per process)."""

    scheduler: Scheduler
    updates_per_epoch: int
    total: int
    factor: float = 1.0     # plateau: decay_rate ** decays so far (`plateau_step`), applied on every step
    min_lr: float = 0.0

    def position(self, epoch: int, update_in_epoch: int) -> int:
        """The clock after `update_in_epoch` updates of `epoch` (0-based)."""
        return epoch * self.updates_per_epoch + update_in_epoch

    def step(self, epoch: int, update_in_epoch: int) -> None:
        """Set the learning rate for the clock's position (timm schedulers are functions of it)."""
        self.scheduler.step_update(num_updates=self.position(epoch, update_in_epoch))
        if self.factor != 1.0:
            for group in self.scheduler.optimizer.param_groups:
                group[self.scheduler.param_group_field] = max(group[self.scheduler.param_group_field] * self.factor,
                                                               self.min_lr)


def plateau_step(progress, f1: float, patience: int) -> bool:
    """Record an epoch's validation F1 in `progress` (saved with the run, so resume continues the count);
    True when it starts a new decay: `patience` epochs in a row without beating the best."""
    if f1 > progress.plateau_best:
        progress.plateau_best, progress.plateau_bad = f1, 0
        return False
    progress.plateau_bad += 1
    if progress.plateau_bad >= patience:
        progress.plateau_decays, progress.plateau_bad = progress.plateau_decays + 1, 0
        return True
    return False


def build_schedule(optimizer, epochs: int, warmup_epochs: float, lr: float, min_lr: float,
                   batches: int, accum: int, name: str = "cosine", decay_epochs: float = 0.0,
                   decay_rate: float = 0.1, decay_milestones: tuple = ()) -> Schedule:
    """Warmup (from lr/100) + schedule `name` over epochs x ceil(batches per process / accumulation) updates.

    cosine ends at `min_lr`; the others are timm's (`create_scheduler_v2`, sized in updates):
    step (x decay_rate every decay_epochs), multistep (x decay_rate at each of decay_milestones),
    poly (power decay_rate), tanh, wsd (warmup-stable-decay: the last decay_epochs, or that fraction if
    < 1, decay), rsqrt, constant.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")
    per_epoch = max(math.ceil(batches / accum), 1)
    total = max(epochs * per_epoch, 1)
    warmup = min(round(warmup_epochs * per_epoch), total - 1)
    if name == "plateau":
        name = "constant"  # the decays come from `plateau_step` through Schedule.factor
    if name == "cosine":
        scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=min_lr, warmup_t=warmup,
                                      warmup_lr_init=lr / 100, t_in_epochs=False)
    else:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=name, num_epochs=epochs, warmup_epochs=warmup / per_epoch, warmup_lr=lr / 100,
            min_lr=min_lr, decay_epochs=decay_epochs or None, decay_rate=decay_rate,
            decay_milestones=list(decay_milestones), step_on_epochs=False, updates_per_epoch=per_epoch)
    return Schedule(scheduler=scheduler, updates_per_epoch=per_epoch, total=total, min_lr=min_lr)
