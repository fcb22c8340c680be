"""One training epoch, validation and prediction under accelerate (DDP-safe gathering, EMA, schedule)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..core.probabilities import probabilities
from ..evaluation import metrics


@dataclass(frozen=True)
class EpochResult:
    """Mean training loss over all processes, throughput, and the optimizer-update counter after the epoch."""
    loss: float
    lr: float
    images: int
    seconds: float
    updates: int

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def _to_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(
    accelerator,
    model: nn.Module,
    ema,
    loss_fn: nn.Module,
    optimizer,
    scheduler,
    loader,
    updates: int,
    grad_clip: float = 0.0,
    max_batches: int = 0,
    channels_last: bool = False,
    on_progress: Optional[Callable[[int, float, float], None]] = None,
    log_every: int = 10,
) -> EpochResult:
    """Train over `loader` once; returns the epoch's stats and the new optimizer-update count.

    Gradient accumulation comes from `accelerator.accumulate`. Scheduler (timm, stepped per
    optimizer update) and EMA advance only after a real optimizer step: `sync_gradients` and not
    skipped by the fp16 scaler. The loss stays on the device; it is read (a sync) only every
    `log_every` batches for `on_progress(batches_done, running_loss, lr)`.
    """
    model.train()
    unwrapped = accelerator.unwrap_model(model)
    loss_sum = torch.zeros((), device=accelerator.device)
    n_batches, start = 0, time.perf_counter()
    batch_size = 0
    for x, y in loader:
        if max_batches and n_batches >= max_batches:
            break
        with accelerator.accumulate(model):
            loss = loss_fn(model(_to_input(x, channels_last)), y)
            accelerator.backward(loss)
            if accelerator.sync_gradients and grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            updates += 1
            scheduler.step_update(num_updates=updates)
            ema.update(unwrapped, step=updates)
        loss_sum += loss.detach()
        n_batches += 1
        batch_size = batch_size or x.shape[0]
        if on_progress is not None and n_batches % log_every == 0:
            on_progress(n_batches, (loss_sum / n_batches).item(), optimizer.param_groups[0]["lr"])
    mean_loss = accelerator.reduce(loss_sum / max(n_batches, 1), reduction="mean").item()
    images = n_batches * batch_size * accelerator.num_processes
    return EpochResult(loss=mean_loss, lr=float(optimizer.param_groups[0]["lr"]), images=images,
                       seconds=time.perf_counter() - start, updates=updates)


@torch.no_grad()
def predict_logits(accelerator, model: nn.Module, loader, channels_last: bool = False):
    """Logits (fp32, CPU) of every example in a prepared loader and its labels if the loader has them.

    `gather_for_metrics` drops the duplicates DDP pads the last batch with, so the result covers
    exactly the dataset, in order.
    """
    model.eval()
    outs, labels = [], []
    for batch in loader:
        x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
        with accelerator.autocast():
            logits = model(_to_input(x, channels_last)).float()
        if y is None:
            outs.append(accelerator.gather_for_metrics(logits).cpu())
        else:
            logits, y = accelerator.gather_for_metrics((logits, y))
            outs.append(logits.cpu())
            labels.append(y.cpu())
    return torch.cat(outs), (torch.cat(labels) if labels else None)


def evaluate(accelerator, model: nn.Module, loader, head: str, loss_fn: nn.Module,
             channels_last: bool = False) -> dict:
    """Validation loss and `metrics.scores` (18-class macro F1, per-head F1, accuracy, n), computed once."""
    logits, y = predict_logits(accelerator, model, loader, channels_last)
    pred = probabilities(logits, head)["class"].argmax(-1)
    return {"loss": float(loss_fn(logits, y)), **metrics.scores(y.numpy(), pred.numpy())}
