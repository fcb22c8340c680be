"""The fold loop `train.py` runs: checks first, then for each fold train, validate, record, save state, resume."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import timm
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.tracking import LOGGER_TYPE_TO_CLASS
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from rich.markup import escape

from maskds.config.keys import TrainConfig
from maskds.config.plan import FoldModel
from maskds.core.console import show
from maskds.core.distributed import cpu_precision, on_main, use_cpu
from maskds.core.errors import UserError
from maskds.core.memory import cpu_memory
from maskds.core.metrics import selection_score
from maskds.core.probabilities import Probs
from maskds.data.cache import TRAIN_ONLY_FOLD
from maskds.data.cache_meta import cache_crop, cache_id, rebuild_command
from maskds.model.checkpoint import resolved_metadata
from maskds.training.datasets import load_train_split
from maskds.training.device_images import use_device_images
from maskds.training.engine import StepOptions, sync_batchnorm, train_one_epoch, validate
from maskds.training.losses import MaskLoss
from maskds.training.mixing import MixOptions
from maskds.training.progress import epoch_table, train_progress
from maskds.training.records import FoldFiles, epoch_record, oof_index, tracker_scalars
from maskds.training.resume import resume_dir, save_state_atomic
from maskds.training.schedule import plateau_step
from maskds.training.setup import FoldLoaders, build_fold, build_loaders, build_model
from maskds.training.state import FoldState

# What runs saved before a key existed did: the CPU data path (images_on_device came later, default auto).
LEGACY_VALUES = {"images_on_device": False}

# Keys that may change between a killed run and its resume without changing the result.
RESUME_FREE_KEYS = {"resume", "stop_after_epochs", "num_workers", "log_with", "folds", "compile", "validate_raw",
                    "cudnn_benchmark", "tune_decision", "face_crop", "face_margin"}


@dataclass(frozen=True)
class TrainData:
    """The cache every fold trains from: its train split (images as bytes), image size and identity."""
    table: datasets.Dataset
    cache_size: list[int]
    cache_id: str
    images_on_device: bool = False   # `images_on_device` resolved once for the run (`resolve_device_images`)
    face_crop: tuple | None = None   # (method, margin) the cache's images were cropped with, or None


def check_log_with(log_with: str) -> None:
    valid = {"none", "all", *LOGGER_TYPE_TO_CLASS}
    if log_with not in valid:
        raise UserError(f"log_with: {log_with!r} is not a tracker; use one of {sorted(valid)}")


def check_fold_dir(fold_dir: Path, resume: str, config: TrainConfig) -> None:
    """Never overwrite a run silently; on resume the saved config must match (but for RESUME_FREE_KEYS)."""
    if resume == "none":
        if fold_dir.is_dir() and any(fold_dir.iterdir()):
            raise UserError(f"{fold_dir} already holds a run; pass resume=auto to continue it, "
                            f"or choose another name=... (or output_dir=...)")
        return
    saved = fold_dir / "config.yaml"
    if saved.is_file():
        # Keys added to maskds after the run was saved count as what it trained with: the defaults,
        # but for LEGACY_VALUES (whose default is not what older runs did).
        old = {**TrainConfig().to_dict(), **LEGACY_VALUES, **(yaml.safe_load(saved.read_text()) or {})}
        new = config.to_dict()
        changed = sorted(k for k in new if k not in RESUME_FREE_KEYS and old.get(k) != new[k])
        if changed:
            raise UserError(f"resume: {saved} was trained with other values for {', '.join(changed)}; "
                            f"resume with the same config, or start a new run with another name=...")


def plan_folds(config: TrainConfig, available: list[int]) -> list[tuple[FoldModel, Path, Path | None]]:
    """(model, its folder, state to resume from) for every model of the fold plan, checked before any work."""
    models = config.fold_models(available)
    if config.resume not in ("none", "auto") and len(models) != 1:
        raise UserError(f"resume: a state path resumes one fold; also pass folds=[k] (folds are "
                        f"{[m.fold if m.validates else m.dir_name for m in models]})")
    run_dir = Path(config.output_dir) / config.name
    plan = []
    for model in models:
        fold_dir = run_dir / model.dir_name
        check_fold_dir(fold_dir, config.resume, config)
        plan.append((model, fold_dir, resume_dir(config.resume, fold_dir)))
    return plan


def check_state_layout(state: Path) -> None:
    """Refuse a state saved by a maskds that also checkpointed the scheduler (three custom objects):
    its files would load into the wrong objects."""
    if (state / "custom_checkpoint_2.pkl").exists():
        raise UserError(f"resume: {state} was saved by an older maskds (it holds the scheduler too) and cannot be "
                        "continued by this one; start a new run with another name=...")


def make_accelerator(config: TrainConfig, fold_dir: Path) -> Accelerator:
    """Accelerator for one fold: accumulation from the config, precision from the launch config (on a CPU
    without native bf16, fp32 instead of bf16: `cpu_precision`)."""
    cpu = use_cpu()
    precision, note = cpu_precision(os.environ.get("ACCELERATE_MIXED_PRECISION")) if cpu else (None, None)
    if note and PartialState(cpu=cpu).is_main_process:
        show(f"[yellow]{note}[/]")
    return Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=config.grad_accum_steps,
        log_with=None if config.log_with == "none" else config.log_with,
        # Trackers log under fold<k>/tensorboard/<name>-fold<k> (the project name also names wandb/mlflow runs).
        project_config=ProjectConfiguration(project_dir=str(fold_dir), logging_dir=str(fold_dir / "tensorboard")),
        # Same shuffling on every process and across resume: seed + epoch, set by set_epoch().
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed,
                                                  non_blocking=True),
    )


def run(config: TrainConfig) -> None:
    """Check everything, then train each fold of `config.folds`."""
    check_log_with(config.log_with)
    if not timm.is_model(config.model):
        raise UserError(f"model: {config.model!r} is not a timm model name (see timm.list_models())")
    table, meta = load_train_split(config.cache)
    plan = plan_folds(config, sorted(k for k in set(table["fold"]) if k != TRAIN_ONLY_FOLD))
    processes = PartialState(cpu=use_cpu())
    processes.wait_for_everyone()  # every process has passed the checks before any writes
    cache_size = list(meta["args"]["size"])
    on_device = resolve_device_images(config, processes, len(table), config.image_size or cache_size)
    data = TrainData(table, cache_size, cache_id(meta), on_device, cache_crop(meta))
    if processes.is_main_process and (note := crop_mismatch(config, meta)):
        show(f"[yellow]{note}[/]")
    if processes.is_main_process and (note := extra_unused(config, table)):
        show(f"[yellow]{note}[/]")
    for fold, fold_dir, state in plan:
        train_fold(config, data, fold, fold_dir, state)
    processes.wait_for_everyone()
    processes.destroy_process_group()  # once, after the last fold (what end_training would do per fold)


def crop_mismatch(config: TrainConfig, meta: dict) -> str | None:
    """The warning when the recipe names a face crop (`face_crop`, `face_margin`) other than the one the cache
    was built with (`meta`: the cache's metadata), with the command building the recipe's."""
    built = cache_crop(meta) or ("none", None)
    wanted = (config.face_crop, None if config.face_crop == "none" else float(config.face_margin))
    if config.face_crop == "any" or wanted == built:
        return None
    crop = None if config.face_crop == "none" else [config.face_crop, config.face_margin]
    command = rebuild_command("DATA", "NEW_CACHE", {**meta.get("args", {}), "face_crop": crop}, force=False)

    def name(c):
        return repr(c[0]) if c[1] is None else f"{c[0]!r} (margin {c[1]:g})"
    return escape(f"face_crop: this recipe was measured on a cache built with face crop {name(wanted)}, but "
                  f"{config.cache} has {name(built)}: training goes on with the cache's images; for the "
                  f"recipe's, build a cache with `{command}` (or set face_crop=any)")


def extra_unused(config: TrainConfig, table) -> str | None:
    """The warning when `extra_per_epoch` asks for extra persons the cache does not hold (built without --extra)."""
    if config.extra_per_epoch <= 0:
        return None
    if "origin" in table.column_names and "extra" in set(table["origin"]):
        return None
    return (f"extra_per_epoch={config.extra_per_epoch}: the cache {config.cache} holds no --extra rows, so every "
            "epoch trains the competition's rows only; build it with `maskds build ... --extra DIR`")


def resolve_device_images(config: TrainConfig, processes: PartialState, n_images: int, image_size: list[int]) -> bool:
    """`images_on_device` for the whole run: `auto` is decided once, on the main process from its free
    memory (cached blocks released first), and every process takes that decision, so no fold and no
    process trains on the other data path."""
    if config.images_on_device != "auto":
        return bool(config.images_on_device)
    decision = [False]
    if processes.is_main_process:
        if processes.device.type == "cuda":
            torch.cuda.empty_cache()
        decision = [use_device_images("auto", processes.device, n_images, image_size)]
    broadcast_object_list(decision)
    return bool(decision[0])


def train_fold(config: TrainConfig, data: TrainData, fold: FoldModel, fold_dir: Path, resume_from: Path | None) -> None:
    """Train one fold: validate the EMA (and the raw weights with validate_raw) each epoch, keep the best
    EMA weights by F1, save state."""
    accelerator = make_accelerator(config, fold_dir)
    if config.sam_rho > 0 and accelerator.mixed_precision == "fp16":
        raise UserError("sam_rho: SAM is not supported under fp16 loss scaling; use bf16 or no mixed precision "
                        "in the accelerate launch config, or sam_rho=0")
    torch.backends.cudnn.benchmark = config.cudnn_benchmark
    set_seed(config.seed)  # same on every process: identical init, so every rank's EMA starts equal
    model, ema = build_model(config, accelerator.device)
    resolved = resolved_metadata(config, model, data.cache_size, data.face_crop)
    loaders = build_loaders(config, data.table, fold, resolved["image_size"], accelerator.device, data.images_on_device)
    files = FoldFiles(fold_dir, fold, config, resolved, oof_index(data.table, loaders.val_rows, fold.fold, data.cache_id))
    state = build_fold(config, accelerator, model, ema, loaders)
    accelerator.register_for_checkpointing(state.ema, state.progress)
    if resume_from is not None:
        check_state_layout(resume_from)
        accelerator.load_state(str(resume_from))  # model, optimizer, RNG, and EMA, progress (registered)
    on_main(accelerator, f"starting {files.fold_dir}", lambda: files.start(state.progress.epoch))
    if resume_from is not None:
        accelerator.print(f"resumed {files.fold_dir} from {resume_from}: {state.progress.epoch} epoch(s) done")
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}
    on_main(accelerator, "starting the trackers",
            lambda: accelerator.init_trackers(f"{config.name}-{fold.dir_name}", config={**hparams, "fold": fold.tag}))
    loss_fn = MaskLoss(config.head_spec(), config.loss, config.label_smoothing, config.focal_gamma, config.head_weights,
                       config.soft_f1_weight, config.heads, config.pseudo_weight, config.extra_weight)
    first = state.progress.epoch
    with cpu_memory(accelerator.device.type == "cpu"):  # no page faults for each step's activations
        for epoch in range(first, config.epochs):
            record, ema_probs = run_epoch(accelerator, state, loaders, loss_fn, config, fold)
            on_main(accelerator, "logging to the trackers", lambda: accelerator.log(tracker_scalars(record), step=epoch))
            on_main(accelerator, f"writing epoch {epoch}'s files in {fold_dir}",
                    lambda: _write_epoch(files, record, state, ema_probs))
            save_state_atomic(accelerator, files.fold_dir)
            if config.stop_after_epochs and epoch + 1 - first >= config.stop_after_epochs:
                break
    # Not end_training(): it also ends the process group the next fold needs.
    on_main(accelerator, "closing the trackers", lambda: [tracker.finish() for tracker in accelerator.trackers])


def _write_epoch(files: FoldFiles, record: dict, state: FoldState, ema_probs: Probs) -> None:
    files.write_epoch(record, state.ema.module.state_dict(), ema_probs)
    show(epoch_table(files.fold, files.config.epochs, record))


def run_epoch(accelerator, state: FoldState, loaders: FoldLoaders, loss_fn: MaskLoss, config: TrainConfig,
              fold: FoldModel) -> tuple[dict, Probs]:
    """Train epoch `state.progress.epoch`, validate, advance the progress; returns the metrics record
    and the EMA's validation probabilities."""
    epoch = state.progress.epoch
    loaders.train.set_epoch(epoch)      # shuffling (seedable sampler)
    loaders.train_set.set_epoch(epoch)  # augmentations (per-sample seeds)
    if config.scheduler == "plateau":
        state.schedule.factor = config.decay_rate ** state.progress.plateau_decays
    options = StepOptions(grad_clip=config.grad_clip, max_batches=loaders.batches, channels_last=config.channels_last,
                          log_every=max(1, min(20, loaders.batches // 10)), sam_rho=config.sam_rho,
                          mix=MixOptions(config.mixup_alpha, config.cutmix_alpha, config.mix_prob), seed=config.seed)
    with train_progress(accelerator.is_main_process, f"{fold.label} epoch {epoch + 1}/{config.epochs}", loaders.batches,
                        config.batch_size * accelerator.num_processes) as on_progress:
        result = train_one_epoch(accelerator, state, loss_fn, loaders.train, options, on_progress)
    if loaders.val is None:  # folds=full: nothing to validate; the last epoch's EMA weights are the checkpoint
        sync_batchnorm(accelerator, state)  # what validation does for a fold: the processes' mean is saved
        best = epoch == config.epochs - 1
        state.progress.epoch = epoch + 1
        return epoch_record(epoch, result, None, None, best, state), None
    raw, ema, ema_probs = validate(accelerator, state, loaders.val, config.head_spec(), loss_fn, config.channels_last,
                                   raw=config.validate_raw)
    ema["score"] = selection_score(ema, config.heads)  # 18-class macro F1; a specialist's: its heads' mean F1
    if config.scheduler == "plateau" and plateau_step(state.progress, ema["score"], config.patience_epochs):
        accelerator.print(f"plateau: validation F1 has not improved for {config.patience_epochs} epoch(s); "
                          f"the learning rate is now x{config.decay_rate ** state.progress.plateau_decays:g}")
    best = ema["score"] > state.progress.best_f1
    if best:
        state.progress.best_f1, state.progress.best_epoch = ema["score"], epoch
    record = epoch_record(epoch, result, raw, ema, best, state)
    state.progress.epoch = epoch + 1
    return record, ema_probs
