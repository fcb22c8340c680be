"""Building one fold's training: the model and its EMA, the loaders, the optimizer and the schedule."""
from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np
import torch
from accelerate.utils import set_seed
from timm.optim import create_optimizer_v2
from torch import nn
from torch.utils.data import DataLoader

from maskds.config.keys import TrainConfig
from maskds.config.plan import FoldModel
from maskds.core.labels import DEFAULT_AGE_THRESHOLDS
from maskds.model.network import create_model
from maskds.model.transforms import eval_transform, train_transform
from maskds.training.datasets import CachedImages, class_and_age, fold_split, make_loader, with_known
from maskds.training.device_images import DeviceBatches, SampleParams, decode_to_device
from maskds.training.draws import ExtraDraw, PersonDraw, PhotoDraw
from maskds.training.ema import FastEma
from maskds.training.schedule import batches_per_epoch, build_schedule
from maskds.training.state import FoldState, RunProgress


@dataclass
class FoldLoaders:
    """A fold's data: the training dataset (its epoch selects the augmentations) and both loaders.

    With the images on the device, `device_images` holds them (training, validation) and the loaders
    ship indices and augmentation parameters; `build_fold` wraps them into `DeviceBatches`."""
    train_set: CachedImages | SampleParams
    train: DataLoader | DeviceBatches
    val: DataLoader | DeviceBatches | None   # None: folds=full, nothing to validate
    val_rows: np.ndarray   # cache rows of the validation images, in validation order (folds=full: none)
    batches: int = 0   # training batches per process and epoch (after limit_train_batches)
    device_images: tuple[torch.Tensor, torch.Tensor | None] | None = None


def build_model(config: TrainConfig, device: torch.device) -> tuple[nn.Module, FastEma]:
    """The model on `device` and its fp32 EMA, built from the unwrapped model (before any DDP wrap)."""
    model = create_model(config.model, config.head_spec(), config.pretrained, config.pretrained_mapping, config.drop_rate,
                         config.mean, config.std, config.drop_path_rate, config.image_size)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    # warmup_power 1: decay t/(1+t) at update t, i.e. the plain mean of every update so far, until it
    # reaches the configured decay after 1/(1 - decay) updates: the horizon (`ema_decay_for`).
    return model, FastEma(model, decay=config.ema_decay, use_warmup=config.ema_warmup, warmup_power=1.0,
                             dtype=torch.float32)


def ema_decay_for(config: TrainConfig, updates_per_epoch: int) -> float:
    """The EMA decay: its horizon 1/(1 - decay) is `ema_epochs` epochs of updates when set, else `ema_decay`."""
    if config.ema_epochs > 0:
        return 1.0 - 1.0 / max(config.ema_epochs * updates_per_epoch, 1.0)
    return config.ema_decay


def build_loaders(config: TrainConfig, table: datasets.Dataset, fold: FoldModel | int, image_size: list[int],
                  device: torch.device, on_device: bool = False) -> FoldLoaders:
    """Training on the configured age bands (e.g. >= 58 to lift the rare band), validation on the
    competition's (< 30, 30..59, >= 60): the best checkpoint is chosen by the metric that is scored.

    The images are decoded in loader workers (`CachedImages`), or with `on_device` once into the
    device's memory (`images_on_device`, resolved once per run by `fit`; see `device_images`)."""
    split = fold_split(table, fold, config.drop_ages)
    train_labels, val_labels = class_and_age(table, config.age_thresholds), class_and_age(table, DEFAULT_AGE_THRESHOLDS)
    rows, extra = extra_pool(table, split.train, config.extra_per_epoch, config.seed, config.photos_per_person)
    draw = None
    if config.person_sampling:  # gender and age learn from one image per person and epoch
        train_labels = with_known(train_labels)
        persons = np.asarray(table["person_id"])[rows].astype(object)
        if extra is not None:  # ExtraDraw already trains one photo per extra person: that one keeps its labels
            persons[extra.n_fixed:] = [f"\0extra{k}" for k in range(len(rows) - extra.n_fixed)]
        draw = PersonDraw(persons, config.seed, photos=extra.photos if extra is not None else None)
    if on_device:
        train_set: CachedImages | SampleParams = SampleParams(train_labels[rows], config.augment, config.seed,
                                                              draw, extra)
        val_set: CachedImages | SampleParams = SampleParams(val_labels[split.val], None)
        images = (decode_to_device(table, rows, image_size, device),
                  decode_to_device(table, split.val, image_size, device) if len(split.val) else None)
    else:
        train_set = CachedImages(table, rows, train_labels, train_transform(image_size, config.augment),
                                 seed=config.seed, person_draw=draw, extra_draw=extra)
        val_set = CachedImages(table, split.val, val_labels, eval_transform(image_size), seed=None)
        images = None
    val = make_loader(val_set, config.batch_size * 2, False, config.num_workers, device) if len(split.val) else None
    return FoldLoaders(train_set, make_loader(train_set, config.batch_size, True, config.num_workers, device), val,
                       val_rows=split.val, device_images=images)


def extra_pool(table: datasets.Dataset, train: np.ndarray, per_epoch: int, seed: int,
               photos_per_person: int = 0) -> tuple[np.ndarray, ExtraDraw | None]:
    """(training rows, the epoch's draw or None: every row every epoch). With `extra_per_epoch` > 0 and
    `--extra` rows in the cache, the competition's rows come first and the extra rows after them, as
    `ExtraDraw` reads; with `photos_per_person` > 0 the rows before them (the competition's, pseudo labels,
    and extra rows when they all train every epoch) give that many photos per person and epoch
    (`PhotoDraw`; none where no person has more photos than that). The epoch's length, and with it the
    schedule's steps per epoch (sized from the loader's length), follows."""
    rows, n_fixed = train, len(train)
    if per_epoch > 0 and "origin" in table.column_names:
        is_extra = np.asarray(table["origin"])[train] == "extra"
        if is_extra.any():
            rows, n_fixed = np.concatenate([train[~is_extra], train[is_extra]]), int((~is_extra).sum())
    persons = np.asarray(table["person_id"])[rows] if photos_per_person > 0 or n_fixed < len(rows) else None
    photos = PhotoDraw(persons[:n_fixed], photos_per_person, seed) if photos_per_person > 0 else None
    if photos is not None and len(photos) == n_fixed:  # nobody has more photos than that: every row, as with 0
        photos = None
    if photos is None and n_fixed == len(rows):
        return train, None
    return rows, ExtraDraw(n_fixed, persons[n_fixed:], per_epoch if n_fixed < len(rows) else 0, seed, photos)


def build_fold(config: TrainConfig, accelerator, model: nn.Module, ema: FastEma,
               loaders: FoldLoaders) -> FoldState:
    """Optimizer, `prepare` (model, optimizer, loaders), the schedule sized by this run's loader, and
    the compiled model the training step calls when `compile` is on.

    The timm scheduler stays out of `prepare`: accelerate's wrapper would step it once per process.
    """
    set_seed(config.seed, device_specific=True)  # weights are equal on every process; dropout masks now differ
    optimizer = create_optimizer_v2(model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                                    **optimizer_kernels(config.optimizer, accelerator.device))
    if loaders.device_images is None:
        if loaders.val is None:  # folds=full
            model, optimizer, loaders.train = accelerator.prepare(model, optimizer, loaders.train)
        else:
            model, optimizer, loaders.train, loaders.val = accelerator.prepare(model, optimizer, loaders.train,
                                                                               loaders.val)
    else:
        # The loaders' batches stay on the CPU: the augmentation parameters are planned there (no sync),
        # and DeviceBatches moves indices and targets itself.
        model, optimizer = accelerator.prepare(model, optimizer)
        train = accelerator.prepare_data_loader(loaders.train, device_placement=False)
        loaders.train = DeviceBatches(train, loaders.device_images[0], True, config.channels_last)
        if loaders.val is not None:
            val = accelerator.prepare_data_loader(loaders.val, device_placement=False)
            loaders.val = DeviceBatches(val, loaders.device_images[1], False, config.channels_last)
    loaders.batches = batches_per_epoch(len(loaders.train), config.limit_train_batches, config.grad_accum_steps)
    schedule = build_schedule(optimizer, config.epochs, config.warmup_epochs, config.lr, config.min_lr,
                              loaders.batches, config.grad_accum_steps, config.scheduler, config.decay_epochs,
                              config.decay_rate, tuple(config.decay_milestones))
    ema.decay = ema_decay_for(config, schedule.updates_per_epoch)
    # Compiled after prepare, outside it: accelerate keeps saving and unwrapping the plain (DDP) module,
    # whose parameters the compiled one shares; only the training step runs the compiled graph.
    step_model = torch.compile(model) if config.compile else None
    return FoldState(model=model, ema=ema, optimizer=optimizer, schedule=schedule, progress=RunProgress(),
                     step_model=step_model)


def optimizer_kernels(name: str, device: torch.device) -> dict:
    """On CUDA, torch's fused Adam/AdamW kernel (one launch for every parameter) where timm's name maps to it."""
    return {"fused": True} if device.type == "cuda" and name.lower() in ("adam", "adamw") else {}
