"""The learning-rate schedule: timm's warmup + cosine over optimizer updates, on an epoch-based clock.

The clock is `epoch x updates_per_epoch + updates this epoch`, with `updates_per_epoch` from the loader
this run has. Nothing of it is saved: a run resumed under another process count (other updates per
epoch) rebuilds it from the epochs done, continues at the same point of the curve and ends at `min_lr`
on its last update, where a restored scheduler sized for the old count would stop short.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from timm.scheduler import CosineLRScheduler
from timm.scheduler.scheduler import Scheduler


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

    def position(self, epoch: int, update_in_epoch: int) -> int:
        """The clock after `update_in_epoch` updates of `epoch` (0-based)."""
        return epoch * self.updates_per_epoch + update_in_epoch

    def step(self, epoch: int, update_in_epoch: int) -> None:
        """Set the learning rate for the clock's position (timm schedulers are functions of it)."""
        self.scheduler.step_update(num_updates=self.position(epoch, update_in_epoch))


def build_schedule(optimizer, epochs: int, warmup_epochs: float, lr: float, min_lr: float,
                   batches: int, accum: int) -> Schedule:
    """Warmup (from lr/100) + cosine to `min_lr` over epochs x ceil(batches per process / accumulation)."""
    per_epoch = max(math.ceil(batches / accum), 1)
    total = max(epochs * per_epoch, 1)
    warmup = min(round(warmup_epochs * per_epoch), total - 1)
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=min_lr, warmup_t=warmup,
                                  warmup_lr_init=lr / 100, t_in_epochs=False)
    return Schedule(scheduler=scheduler, updates_per_epoch=per_epoch, total=total)
