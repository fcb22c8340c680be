"""The training run `train.py` calls: checks first, then for each fold train, validate, checkpoint, resume."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
import yaml

from ..core import console
from .checkpoint import resume_dir, save_best, save_state_atomic
from .config import TrainConfig, load_config, save_config
from .curves import plot_curves
from .datasets import CachedImages, class_labels, fold_split, load_train_split, make_loader
from .engine import evaluate, train_one_epoch
from ..core.errors import UserError
from ..core.labels import DEFAULT_AGE_THRESHOLDS
from ..core.distributed import use_cpu
from .losses import MaskLoss
from .model import create_model, resolve_data_config
from .transforms import eval_transform, train_transform

# Keys that may change between a killed run and its resume without changing the result.
RESUME_FREE_KEYS = {"resume", "stop_after_epochs", "num_workers", "log_with", "folds"}


@dataclass
class RunProgress:
    """Where a fold's training stands; registered for checkpointing so resume continues from it."""
    epoch: int = 0          # next epoch to run
    updates: int = 0        # optimizer updates done (the scheduler's clock)
    best_f1: float = -1.0   # best EMA 18-class macro F1 so far
    best_epoch: int = -1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def _check_log_with(log_with: str) -> None:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    valid = {"none", "all", *LOGGER_TYPE_TO_CLASS}
    if log_with not in valid:
        raise UserError(f"log_with: {log_with!r} is not a tracker; use one of {sorted(valid)}")


def _check_fold_dir(fold_dir: Path, resume: str, config: TrainConfig) -> None:
    """Never overwrite a run silently; on resume the saved config must match (but for RESUME_FREE_KEYS)."""
    if resume == "none":
        if fold_dir.is_dir() and any(fold_dir.iterdir()):
            raise UserError(f"{fold_dir} already holds a run; pass resume=auto to continue it, "
                            f"or choose another name=... (or output_dir=...)")
        return
    saved = fold_dir / "config.yaml"
    if saved.is_file():
        old = yaml.safe_load(saved.read_text()) or {}
        new = config.to_dict()
        changed = sorted(k for k in new if k not in RESUME_FREE_KEYS and old.get(k) != new[k])
        if changed:
            raise UserError(f"resume: {saved} was trained with other values for {', '.join(changed)}; "
                            f"resume with the same config, or start a new run with another name=...")


def plan_folds(config: TrainConfig, available: list[int]) -> list[tuple[int, Path, Path | None]]:
    """(fold, fold folder, state to resume from) for every fold to run, checked before any work."""
    folds = config.fold_ids(available)
    if config.resume not in ("none", "auto") and len(folds) != 1:
        raise UserError(f"resume: a state path resumes one fold; also pass folds=[k] (folds are {folds})")
    run_dir = Path(config.output_dir) / config.name
    plan = []
    for k in folds:
        fold_dir = run_dir / f"fold{k}"
        _check_fold_dir(fold_dir, config.resume, config)
        plan.append((k, fold_dir, resume_dir(config.resume, fold_dir)))
    return plan


def make_accelerator(config: TrainConfig, fold_dir: Path):
    """Accelerator for one fold: accumulation from the config, precision from the launch config."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        cpu=use_cpu(),
        gradient_accumulation_steps=config.grad_accum_steps,
        log_with=None if config.log_with == "none" else config.log_with,
        # Trackers log under fold<k>/tensorboard/<name>-fold<k> (the project name also names wandb/mlflow runs).
        project_config=ProjectConfiguration(project_dir=str(fold_dir), logging_dir=str(fold_dir / "tensorboard")),
        # Same shuffling on every process and across resume: seed + epoch, set by set_epoch().
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed,
                                                  non_blocking=True),
    )


def build_scheduler(optimizer, config: TrainConfig, batches_per_epoch: int):
    """Warmup + cosine over optimizer updates: epochs x ceil(batches per process / accumulation)."""
    from timm.scheduler import CosineLRScheduler

    per_epoch = math.ceil(batches_per_epoch / config.grad_accum_steps)
    total = max(config.epochs * per_epoch, 1)
    warmup = min(round(config.warmup_epochs * per_epoch), total - 1)
    return CosineLRScheduler(optimizer, t_initial=total, lr_min=config.min_lr, warmup_t=warmup,
                             warmup_lr_init=config.lr / 100, t_in_epochs=False), total


def batches_per_epoch(loader_len: int, limit: int, accum: int) -> int:
    """Batches each process trains per epoch; a limit is rounded up to whole accumulation cycles."""
    if not limit:
        return loader_len
    return min(loader_len, math.ceil(limit / accum) * accum)


def main(argv: list[str] | None = None) -> int:
    """`train.py --config X.yaml key=value ...`: 0 on success, 2 on a user error."""
    keys = ", ".join(f"{k}={v!r}" for k, v in TrainConfig().to_dict().items())
    parser = argparse.ArgumentParser(
        prog="train.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train maskds folds, each validated on its own person-level fold; run it under accelerate:\n"
        "  accelerate launch --config_file accelerate_configs/cpu.yaml train.py --config configs/demo.yaml "
        "cache=demo/cache folds=[0,1]\nPrecision and process count come from the launch config "
        "(accelerate_configs/), everything else from the train config and key=value overrides.",
        epilog="config keys and their defaults (maskds/config.py documents each one):\n" + textwrap.fill(keys, 100),
    )
    parser.add_argument("--config", help="YAML train config, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 folds=[0]")
    args = parser.parse_args(argv)
    try:
        run(load_config(args.config, args.overrides))
    except UserError as err:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(config: TrainConfig) -> None:
    """Check everything, then train each fold of `config.folds`."""
    from accelerate import PartialState

    _check_log_with(config.log_with)
    if not timm.is_model(config.model):
        raise UserError(f"model: {config.model!r} is not a timm model name (see timm.list_models())")
    table, meta = load_train_split(config.cache)
    plan = plan_folds(config, sorted(set(table["fold"])))
    PartialState(cpu=use_cpu()).wait_for_everyone()  # every process has passed the checks before any writes
    for fold, fold_dir, state in plan:
        train_fold(config, table, meta, fold, fold_dir, state)


def _fold_setup(config: TrainConfig, accelerator, table, meta, fold: int):
    """Model (+EMA, fp32, from the unwrapped model), datasets and loaders of one fold, not yet prepared."""
    from timm.utils import ModelEmaV3

    model = create_model(config.model, config.head, config.pretrained, config.pretrained_mapping, config.drop_rate,
                         config.mean, config.std)
    resolved = {"model": config.model, "head": config.head,
                **resolve_data_config(model, config.image_size, config.mean, config.std),
                "cache_size": list(meta["args"]["size"]), "age_thresholds": list(config.age_thresholds)}
    split = fold_split(table, fold, config.drop_ages)
    size = resolved["image_size"]  # mean/std are applied inside the model (model.Normalize)
    # Train on the configured age bands (e.g. >= 58 to lift the rare band), but validate on the
    # competition's (< 30, 30..59, >= 60): the best checkpoint is chosen by the metric that is scored.
    train_ds = CachedImages(table, split.train, class_labels(table, config.age_thresholds),
                            train_transform(size, config.augment), seed=config.seed)
    val_ds = CachedImages(table, split.val, class_labels(table, DEFAULT_AGE_THRESHOLDS), eval_transform(size),
                          seed=None)
    pin = accelerator.device.type == "cuda"
    loaders = (make_loader(train_ds, config.batch_size, True, config.num_workers, pin),
               make_loader(val_ds, config.batch_size * 2, False, config.num_workers, pin))
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(accelerator.device)
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup, dtype=torch.float32)
    return model, ema, train_ds, loaders, resolved


def _start_or_resume(accelerator, config: TrainConfig, fold_dir: Path, state: Path | None,
                     progress: RunProgress) -> None:
    """Start the fold folder (config.yaml), or load a saved state and keep only the metrics lines of
    the epochs it reached (also dropping a line half-written by a killed run)."""
    if state is not None:
        accelerator.load_state(str(state))  # model, optimizer, RNG, and scheduler, EMA, progress (registered)
    if accelerator.is_main_process:
        fold_dir.mkdir(parents=True, exist_ok=True)
        if not (fold_dir / "config.yaml").is_file():
            save_config(config, fold_dir / "config.yaml")
        _keep_metrics_before(fold_dir / "metrics.jsonl", progress.epoch)
        if state is not None:
            console.show(f"resumed {fold_dir} from {state}: {progress.epoch} epoch(s) done")
    accelerator.wait_for_everyone()


def _keep_metrics_before(metrics_file: Path, epoch: int) -> None:
    """Drop metrics lines of epochs >= `epoch` (not reached by the state resumed from) and broken lines."""
    if not metrics_file.is_file():
        return
    kept = []
    for line in metrics_file.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] < epoch:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    metrics_file.write_text("".join(ln + "\n" for ln in kept))


def train_fold(config: TrainConfig, table, meta, fold: int, fold_dir: Path, state: Path | None) -> None:
    """Train one fold: validate raw and EMA each epoch, keep the best EMA weights by F1, save state."""
    from accelerate.utils import set_seed
    from timm.optim import create_optimizer_v2

    accelerator = make_accelerator(config, fold_dir)
    set_seed(config.seed)  # same on every process: identical init, so every rank's EMA starts equal
    model, ema, train_ds, (train_loader, val_loader), resolved = _fold_setup(config, accelerator, table, meta, fold)
    set_seed(config.seed, device_specific=True)  # weights are equal on every process; dropout masks now differ
    optimizer = create_optimizer_v2(model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    n_batches = batches_per_epoch(len(train_loader), config.limit_train_batches, config.grad_accum_steps)
    # timm scheduler kept out of prepare(): AcceleratedScheduler would step it once per process.
    scheduler, total_updates = build_scheduler(optimizer, config, n_batches)
    progress = RunProgress()
    accelerator.register_for_checkpointing(scheduler, ema, progress)
    loss_fn = MaskLoss(config.head, config.loss, config.label_smoothing, config.focal_gamma, config.head_weights)
    _start_or_resume(accelerator, config, fold_dir, state, progress)
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}
    accelerator.init_trackers(f"{config.name}-fold{fold}", config={**hparams, "fold": fold})
    first = progress.epoch
    for epoch in range(first, config.epochs):
        train_loader.set_epoch(epoch)  # shuffling (seedable sampler)
        train_ds.set_epoch(epoch)      # augmentations (per-sample seeds)
        with console.train_progress(accelerator.is_main_process, f"fold {fold} epoch {epoch + 1}/{config.epochs}",
                                    n_batches, config.batch_size * accelerator.num_processes) as on_progress:
            result = train_one_epoch(accelerator, model, ema, loss_fn, optimizer, scheduler, train_loader,
                                     progress.updates, grad_clip=config.grad_clip, max_batches=n_batches,
                                     channels_last=config.channels_last, on_progress=on_progress,
                                     log_every=max(1, min(20, n_batches // 10)))
        raw = evaluate(accelerator, model, val_loader, config.head, loss_fn, config.channels_last)
        ema_scores = evaluate(accelerator, ema.module, val_loader, config.head, loss_fn, config.channels_last)
        best = ema_scores["macro_f1"] > progress.best_f1
        progress.epoch, progress.updates = epoch + 1, result.updates
        if best:
            progress.best_f1, progress.best_epoch = ema_scores["macro_f1"], epoch
        record = {"epoch": epoch, "train_loss": result.loss, "lr": result.lr, "updates": result.updates,
                  "total_updates": total_updates, "images_per_s": result.images_per_s,
                  "seconds": result.seconds, "raw": raw, "ema": ema_scores, "best": best}
        _record_epoch(accelerator, config, fold_dir, record, ema, resolved, fold)
        save_state_atomic(accelerator, fold_dir)
        if config.stop_after_epochs and epoch + 1 - first >= config.stop_after_epochs:
            break
    accelerator.end_training()


def _record_epoch(accelerator, config: TrainConfig, fold_dir: Path, record: dict, ema, resolved: dict,
                  fold: int) -> None:
    """Best checkpoint (EMA weights, chosen by 18-class macro F1), metrics line, trackers, table."""
    scalars = {"train/loss": record["train_loss"], "train/lr": record["lr"], "train/images_per_s": record["images_per_s"]}
    for which in ("raw", "ema"):
        scalars.update({f"val_{which}/{k}": v for k, v in record[which].items() if k != "n"})
    accelerator.log(scalars, step=record["epoch"])
    if not accelerator.is_main_process:
        return
    if record["best"]:
        info = {"fold": fold, "epoch": record["epoch"], "metrics": record["ema"]}
        save_best(fold_dir / "best.safetensors", ema.module.state_dict(), config, resolved, info)
    with open(fold_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    try:
        plot_curves(fold_dir / "metrics.jsonl", fold_dir / "curves.png")
    except Exception as err:  # a picture must never stop training
        console.show(f"[yellow]could not draw {fold_dir / 'curves.png'}: {err}[/]")
    console.show(console.epoch_table(fold, record["epoch"], config.epochs, record["train_loss"], record["images_per_s"],
                                     record["raw"], record["ema"], record["best"]))
