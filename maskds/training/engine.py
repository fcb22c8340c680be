"""One training epoch, validation and prediction under accelerate (DDP-safe gathering, EMA, schedule)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from timm.utils import distribute_bn
from torch import nn

from maskds.core import metrics
from maskds.core.probabilities import HeadSpec, probabilities
from maskds.training.mixing import MixOptions, batch_rng, mix_batch, mixed_loss
from maskds.training.sam import sam_backward
from maskds.training.state import FoldState


@dataclass(frozen=True)
class EpochResult:
    """Mean training loss over all processes, the last learning rate, throughput, and the epoch's updates."""
    loss: float
    lr: float
    images: int
    seconds: float
    updates: int

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class StepOptions:
    """How each training batch is run: clipping, a batch limit (smoke tests), memory format, logging."""
    grad_clip: float = 0.0        # 0 disables clipping
    max_batches: int = 0          # >0: stop the epoch after this many batches
    channels_last: bool = False
    log_every: int = 10           # batches between progress callbacks
    sam_rho: float = 0.0          # >0: SAM's step size (`sam.sam_backward`)
    mix: MixOptions = MixOptions()  # Mixup / CutMix (`mixing`); off by default
    seed: int = 0                 # with the epoch, batch and process: each batch's mixing draw


class RunningLoss:
    """The epoch's loss sum on the device, and its running mean for the progress bar.

    Reading a CUDA tensor waits for the GPU to finish all queued work, and the GPU then idles while
    the loop queues the next step. So on CUDA each report starts a non-blocking copy and returns the
    previous report's value, whose copy is long done: (batches, mean loss), or None the first time.
    """

    def __init__(self, device: torch.device):
        self.sum = torch.zeros((), device=device)
        self._pending: tuple[int, torch.Tensor, torch.cuda.Event] | None = None

    def report(self, batches: int) -> tuple[int, float] | None:
        if self.sum.device.type != "cuda":
            return batches, float(self.sum) / batches
        ready, host, event = self._pending, self.sum.to("cpu", non_blocking=True), torch.cuda.Event()
        event.record()
        self._pending = (batches, host, event)
        if ready is None:
            return None
        ready[2].synchronize()
        return ready[0], float(ready[1]) / ready[0]


def _to_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(accelerator, state: FoldState, loss_fn: nn.Module, loader, options: StepOptions = StepOptions(),
                    on_progress: Optional[Callable[[int, float, float], None]] = None) -> EpochResult:
    """Train epoch `state.progress.epoch` over `loader` once; `state.progress.updates` counts the updates.

    Gradient accumulation comes from `accelerator.accumulate`. The schedule and the EMA advance only
    after a real optimizer step: `sync_gradients` and not skipped by the fp16 scaler. The loss stays
    on the device and reaches `on_progress(batches_done, running_loss, lr)` every `log_every` batches
    without stalling the GPU (`RunningLoss`).
    """
    model, optimizer, progress = state.model, state.optimizer, state.progress
    forward = state.forward_model
    model.train()
    unwrapped = accelerator.unwrap_model(model)
    state.schedule.step(progress.epoch, 0)  # this epoch's starting point, also after a resume
    running = RunningLoss(accelerator.device)
    n_batches, updates, batch_size, start = 0, 0, 0, time.perf_counter()
    for x, y in loader:
        if options.max_batches and n_batches >= options.max_batches:
            break
        with accelerator.accumulate(model):
            lam = 1.0
            if options.mix.on:
                rng = batch_rng(options.seed, progress.epoch, n_batches, accelerator.process_index)
                x, lam = mix_batch(x, options.mix, rng)
            inputs, step_loss = _to_input(x, options.channels_last), mixed_loss(loss_fn, lam)
            if options.sam_rho > 0:
                loss = sam_backward(accelerator, model, forward, step_loss, inputs, y, options.sam_rho)
            else:
                loss = step_loss(forward(inputs), y)
                accelerator.backward(loss)
            if accelerator.sync_gradients and options.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), options.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            updates += 1
            progress.updates += 1
            state.schedule.step(progress.epoch, updates)
            state.ema.update(unwrapped, step=progress.updates)
        running.sum += loss.detach()
        n_batches += 1
        batch_size = batch_size or x.shape[0]
        if on_progress is not None and n_batches % options.log_every == 0:
            report = running.report(n_batches)
            if report is not None:
                on_progress(*report, optimizer.param_groups[0]["lr"])
    mean_loss = accelerator.reduce(running.sum / max(n_batches, 1), reduction="mean").item()
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


def evaluate(accelerator, model: nn.Module, loader, spec: str | HeadSpec, loss_fn: nn.Module,
             channels_last: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """Validation loss and `metrics.scores` (18-class macro F1, per-head F1, accuracy, n), computed once
    over exactly the loader's examples, and their probabilities {'mask','gender','age','class'}."""
    logits, y = predict_logits(accelerator, model, loader, channels_last)
    probs = probabilities(logits, spec)
    truth = y[:, 0] if y.ndim == 2 else y  # (class id, age) rows or class ids
    scores = {"loss": float(loss_fn(logits, y)), **metrics.scores(truth.numpy(), probs["class"].argmax(-1).numpy())}
    return scores, {k: v.numpy() for k, v in probs.items()}


def sync_batchnorm(accelerator, state: FoldState, raw: bool = False) -> None:
    """Give every process the same BatchNorm statistics after an epoch: the EMA model the mean over processes,
    and with `raw` the raw model the main process's, as DDP's next forward would.

    Each process's statistics drift apart (its own batches; DDP syncs only at the next forward), and
    only the main process's are saved: without this the checkpoint would hold one process's statistics.
    """
    if accelerator.num_processes > 1:
        if raw:
            distribute_bn(state.model, accelerator.num_processes, reduce=False)
        distribute_bn(state.ema.module, accelerator.num_processes, reduce=True)


def validate(accelerator, state: FoldState, loader, spec: HeadSpec, loss_fn: nn.Module,
             channels_last: bool = False, raw: bool = True) -> tuple[dict | None, dict, dict[str, np.ndarray]]:
    """Scores of the raw (None unless `raw`) and the EMA weights on the validation loader, the same on
    every process, and the EMA's probabilities (the out-of-fold predictions when the epoch is the best).
    BatchNorm statistics are synced first (`sync_batchnorm`): what is scored is what is saved.
    """
    sync_batchnorm(accelerator, state, raw)
    raw_scores = evaluate(accelerator, state.model, loader, spec, loss_fn, channels_last)[0] if raw else None
    ema, ema_probs = evaluate(accelerator, state.ema.module, loader, spec, loss_fn, channels_last)
    return raw_scores, ema, ema_probs
