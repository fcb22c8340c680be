"""The one training config: a frozen dataclass loaded from YAML and checked `key=value` overrides."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from maskds.config.checks import age_head_problems, full_fit_problems, heads_problems, menu_problems
from maskds.config.plan import FULL, FoldModel, plan_models
from maskds.core.atomic import atomic_path
from maskds.core.errors import UserError
from maskds.core.labels import HEAD_NAMES
from maskds.core.probabilities import AGE_HEADS, AGE_SOFT_SIGMA, HEAD_TYPES, HeadSpec


@dataclass(frozen=True)
class TrainConfig:
    """Every training choice. Saved with each run and inside each checkpoint as plain values."""

    # data and run folder
    cache: str = "cache"                      # arrow cache written by `maskds build`
    face_crop: str = "any"                    # any | none | fixed | mtcnn: the face crop the recipe was
                                              # measured with (`maskds build --face-crop`); a cache built
                                              # with another one (or margin) trains, with a warning saying
                                              # so; the crop a run trained on is its checkpoints' own
    face_margin: float = 0.15                 # with face_crop fixed | mtcnn: its `--face-margin`
    output_dir: str = "runs"
    name: str = "run"                         # run folder = output_dir/name
    folds: Union[str, list[int]] = "all"      # "all", a list of fold ids, e.g. [0, 2], or "full": one model on
                                              # every person (no validation; the last epoch's EMA weights), in
                                              # <run>/full/, voted by infer.py like a fold
    resume: str = "none"                      # none | auto | path of a fold's state/ folder
    # model
    model: str = "tf_efficientnet_lite0"      # any timm.create_model name
    pretrained: str = "hub"                   # hub | none | a local file | preset:<name>
    pretrained_mapping: str = "auto"          # auto | name | order (how a local file's keys map)
    head: str = "multihead"                   # multihead (3+2+age) | single (18-way)
    age_head: str = "bands"                   # bands (3-way) | soft_bands (the same 3 logits, their targets
                                              # the bands' mass under a Gaussian of age_soft_sigma years around
                                              # the known age; a band-only row: its band) | regression (the
                                              # age, Huber) | distribution (softmax over ages 10..90, Gaussian
                                              # target); all but bands: multihead only
    age_soft_sigma: float = AGE_SOFT_SIGMA    # soft_bands: that Gaussian's sd in years (2.5: a 29 is 0.58 <30,
                                              # 0.42 30-59; a 45 is 30-59); other age heads ignore it
    drop_rate: float = 0.2                    # dropout before the heads
    drop_path_rate: float = 0.0               # stochastic depth inside the backbone (timm's drop_path_rate)
    image_size: Union[list[int], None] = None  # [height, width]; None = the model's pretrained size
    mean: Union[list[float], None] = None      # None = the model's pretrained normalization
    std: Union[list[float], None] = None
    # labels
    age_thresholds: list[int] = field(default_factory=lambda: [30, 60])
    drop_ages: list[int] = field(default_factory=list)  # ages left out of training (e.g. 57..59)
    # optimisation
    epochs: int = 10
    batch_size: int = 32                      # per process
    grad_accum_steps: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    optimizer: str = "adamw"                  # any timm.optim.create_optimizer_v2 name
    sam_rho: float = 0.0                      # >0: SAM around the optimizer, uphill step rho (0.05 is usual);
                                              # two passes per step; not with grad_accum_steps > 1 or fp16
    scheduler: str = "cosine"                 # cosine | tanh | step | multistep | poly | wsd | rsqrt | constant |
                                              # plateau (on the validation EMA macro F1)
                                              # (timm's, per optimizer update; the next three keys shape them)
    decay_epochs: float = 0.0                 # step: decay every this many epochs; wsd/rsqrt: the decay phase
    decay_rate: float = 0.1                   # step, multistep: lr factor at each decay; poly: the power
    decay_milestones: list[int] = field(default_factory=list)  # multistep: epochs to decay at
    patience_epochs: int = 2                  # plateau: epochs without a better validation F1 before a decay
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0                    # 0 disables clipping
    ema_decay: float = 0.999                  # horizon 1/(1 - decay) optimizer updates (ignored if ema_epochs > 0)
    ema_epochs: float = 0.0                   # >0: the horizon in epochs; decay = 1 - 1/(ema_epochs x updates/epoch)
    ema_warmup: bool = True                   # a plain running mean until the horizon is reached (timm warm-up,
                                              # power 1), then exponential: early weights never dominate
    # loss
    loss: str = "ce"                          # ce | focal | soft_f1 | ce+soft_f1 | focal+soft_f1 (soft macro F1
                                              # of the 18 classes, alone or added to the per-head loss)
    soft_f1_weight: float = 1.0               # its weight where it is added
    label_smoothing: float = 0.1
    focal_gamma: float = 2.0
    head_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # mask, gender, age
    pseudo_weight: float = 1.0                # loss weight of pseudo-labelled rows (`maskds pseudo`); 0 ignores them
    extra_weight: float = 1.0                 # loss weight of `--extra` rows (`maskds build --extra`); 0 ignores them
    extra_per_epoch: int = 0                  # >0: each epoch trains on this many `--extra` persons (one photo
                                              # each), drawn anew from (seed, epoch), with every competition
                                              # photo; 0: every extra photo every epoch
    photos_per_person: int = 0                # >0: each epoch trains on this many photos of each person (of a
                                              # competition person's 7; all of a person with fewer), drawn
                                              # anew from (seed, epoch); the epoch is persons x k photos (+
                                              # extra_per_epoch), the schedule follows. Uniform, not by mask
                                              # state: each photo has chance k/7, so the 5:1:1 worn : incorrect
                                              # : not-worn balance holds in expectation (always keeping the
                                              # incorrect and not-worn ones would leave no worn one at k=2).
                                              # Applies to the rows trained every epoch (extra ones too when
                                              # extra_per_epoch is 0); with person_sampling a person's first
                                              # drawn photo keeps gender and age. 0: every photo every epoch
    heads: list[str] = field(default_factory=lambda: list(HEAD_NAMES))  # the heads this run learns: a
                                              # specialist (e.g. [age]) is assembled with others by
                                              # `infer.py --head age=RUN ...`; its epochs are picked by
                                              # the mean F1 of its heads
    # augmentation
    augment: str = "medium"                   # none | light | medium | strong
    mixup_alpha: float = 0.0                  # > 0: Mixup, lam ~ Beta(alpha, alpha) (0.2 is usual)
    cutmix_alpha: float = 0.0                 # > 0: CutMix (1.0 is usual); mixed batches score every head's
                                              # loss on both images' labels, weighted lam : 1 - lam (`mixing`)
    mix_prob: float = 1.0                     # the share of batches mixed (both on: half Mixup, half CutMix)
    person_sampling: bool = False             # gender and age learn from one image per person and epoch (drawn
                                              # anew each epoch); the other images teach the mask head only
    # loop
    num_workers: int = 2
    seed: int = 42
    log_with: str = "tensorboard"             # an accelerate tracker name, or "none"
    limit_train_batches: int = 0              # >0: stop each epoch after this many batches (smoke tests)
    channels_last: bool = False
    compile: bool = False                     # torch.compile the training step's model (EMA, checkpoints and
                                              # validation keep the plain module); pays off on a GPU
    images_on_device: bool | str = "auto"  # auto | true | false: decode the fold's images once into the
                                              # training device's memory and augment batches there (auto: on
                                              # CUDA when they fit in a quarter of its free memory)
    cudnn_benchmark: bool = False             # CUDA: let cuDNN time its kernels for each new input shape (on an
                                              # H100 it made the first step 3x slower and no later one faster)
    validate_raw: bool = False                # also score the raw (non-EMA) weights every epoch (the EMA's
                                              # scores pick the checkpoint; raw ones only draw the curves)
    tune_decision: str = "none"               # none | class | head | age: after the folds, fit a decision for
                                              # macro F1 on the run's out-of-fold predictions into
                                              # decision.json, which infer.py applies (`maskds oof
                                              # --tune-decision KIND`; age: a regression age head's cuts)
    stop_after_epochs: int = 0                # >0: leave after this many epochs of this invocation, state
                                              # saved, as if killed (time-boxed jobs; resume=auto goes on)

    def __post_init__(self) -> None:
        _check_values(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples) for YAML, JSON and checkpoint metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from plain values, checking every key and type; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(cls)
        checked = {k: _coerce(v, hints[k], f"{source}: {k}") for k, v in data.items()}
        return cls(**checked)

    def head_spec(self) -> HeadSpec:
        """What the model's logits hold; numeric age heads split ages into bands at `age_thresholds`."""
        return HeadSpec(self.head, self.age_head, tuple(self.age_thresholds), self.age_soft_sigma)

    def fold_models(self, available: list[int]) -> list[FoldModel]:
        """The models to train (the fold plan), checked against the folds the cache has."""
        return plan_models(self.folds, available)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except UserError:
                continue
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise UserError(f"{where}: expected null, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string; it is meant as a number
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _check_values(c: TrainConfig) -> None:
    """Value checks beyond types, each naming the key."""
    problems = []
    if not 0 <= c.ema_decay < 1 or c.ema_epochs < 0:
        problems.append(f"ema_decay must be in [0, 1) and ema_epochs >= 0, got {c.ema_decay} and {c.ema_epochs}")
    if c.head not in HEAD_TYPES:
        problems.append(f"head: must be one of {list(HEAD_TYPES)}, got {c.head!r}")
    if c.age_head not in AGE_HEADS:
        problems.append(f"age_head: must be one of {list(AGE_HEADS)}, got {c.age_head!r}")
    elif c.age_head != "bands" and c.head != "multihead":
        problems.append(f"age_head: {c.age_head!r} needs head=multihead (head=single is one 18-way softmax)")
    problems += age_head_problems(c)
    if isinstance(c.folds, str) and c.folds not in ("all", FULL):
        problems.append(f"folds: must be 'all', 'full' or a list of fold ids like [0, 2], got {c.folds!r}")
    problems += full_fit_problems(c)
    if isinstance(c.folds, list) and (not c.folds or len(set(c.folds)) != len(c.folds) or min(c.folds) < 0):
        problems.append(f"folds: must list distinct fold ids >= 0, like [0, 2], got {c.folds!r}")
    if c.image_size is not None and (len(c.image_size) != 2 or min(c.image_size) < 8):
        problems.append(f"image_size: must be [height, width] of at least 8 px, got {c.image_size}")
    for key in ("mean", "std"):
        v = getattr(c, key)
        if v is not None and len(v) != 3:
            problems.append(f"{key}: must have 3 values (R, G, B), got {v}")
    if len(c.age_thresholds) != 2 or not c.age_thresholds[0] < c.age_thresholds[1]:
        problems.append(f"age_thresholds: must be [low, high] with low < high, got {c.age_thresholds}")
    if len(c.head_weights) != 3:
        problems.append(f"head_weights: must be [mask, gender, age], got {c.head_weights}")
    problems += heads_problems(c)
    for key in ("epochs", "batch_size", "grad_accum_steps"):
        if getattr(c, key) < 1:
            problems.append(f"{key}: must be >= 1, got {getattr(c, key)}")
    for key in ("limit_train_batches", "stop_after_epochs", "num_workers"):
        if getattr(c, key) < 0:
            problems.append(f"{key}: must be >= 0, got {getattr(c, key)}")
    if c.warmup_epochs < 0 or c.grad_clip < 0 or c.min_lr < 0 or c.weight_decay < 0:
        problems.append("warmup_epochs, grad_clip, min_lr and weight_decay must be >= 0")
    if c.lr <= 0:
        problems.append(f"lr: must be > 0, got {c.lr}")
    if not 0.0 <= c.ema_decay < 1.0:
        problems.append(f"ema_decay: must be in [0, 1), got {c.ema_decay}")
    problems += menu_problems(c)
    if c.augment not in ("none", "light", "medium", "strong"):
        problems.append(f"augment: must be none, light, medium or strong, got {c.augment!r}")
    if not 0.0 <= c.label_smoothing < 1.0:
        problems.append(f"label_smoothing: must be in [0, 1), got {c.label_smoothing}")
    if c.images_on_device not in (True, False, "auto"):
        problems.append(f"images_on_device: must be auto, true or false, got {c.images_on_device!r}")
    if c.pretrained_mapping not in ("auto", "name", "order"):
        problems.append(f"pretrained_mapping: must be auto, name or order, got {c.pretrained_mapping!r}")
    if problems:
        raise UserError("invalid config", problems)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings to a dict; values are parsed as YAML (so `folds=[0,2]`, `lr=3e-4`)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected key=value (e.g. epochs=5)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise UserError(f"override {item!r}: value is not valid YAML ({err})") from None
        out[key.strip()] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (or the defaults when path is None) and apply `key=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {p} does not exist; pass --config configs/demo.yaml or another YAML file")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config file {p} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise UserError(f"config file {p} must hold a mapping of key: value, got {type(data).__name__}")
    base = TrainConfig.from_dict(data, source=str(path) if path else "defaults")
    over = parse_overrides(overrides or [])
    if not over:
        return base
    return TrainConfig.from_dict({**base.to_dict(), **over}, source="override")


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the config as plain YAML (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
