"""Checks of a TrainConfig's menu keys (loss, schedule, SAM, mixing, age head) and of `heads`, each naming its key."""
from __future__ import annotations

from maskds.config.plan import FULL
from maskds.core.faces import CROP_METHODS
from maskds.core.labels import HEAD_NAMES

LOSS_KINDS = ("ce", "focal", "soft_f1", "ce+soft_f1", "focal+soft_f1")  # training.losses builds each
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "plateau")  # training.schedule


def heads_problems(c) -> list[str]:
    """`heads`: a non-empty set of mask, gender, age; a subset needs per-head losses to leave the others out."""
    unknown = [h for h in c.heads if h not in HEAD_NAMES]
    if unknown or not c.heads or len(set(c.heads)) != len(c.heads):
        return [f"heads: must list distinct heads of {', '.join(HEAD_NAMES)} (e.g. [age]), got {c.heads}"]
    if set(c.heads) == set(HEAD_NAMES):
        return []
    if c.head != "multihead":
        return [f"heads: a specialist ({c.heads}) needs head=multihead (head=single is one 18-way softmax)"]
    if c.loss.endswith("soft_f1"):
        return [f"heads: loss {c.loss!r} scores the 18 classes, which a specialist ({c.heads}) does not "
                "learn; use loss=ce or loss=focal"]
    return []


def age_head_problems(c) -> list[str]:
    """soft_bands' key: `age_soft_sigma` > 0; its soft targets live in the per-head loss, which loss=soft_f1
    alone has not (the 18-class soft F1 scores hard classes): there it would train as bands, unsaid."""
    problems = []
    if not c.age_soft_sigma > 0:
        problems.append(f"age_soft_sigma: must be > 0 (years), got {c.age_soft_sigma}")
    if c.age_head == "soft_bands" and c.loss == "soft_f1":
        problems.append("age_head: soft_bands learns soft targets through the per-head loss, which loss=soft_f1 "
                        "(the 18-class soft F1 alone) has not; use loss=ce+soft_f1 (or ce, focal, focal+soft_f1), "
                        "or age_head=bands")
    return problems


def menu_problems(c) -> list[str]:
    """Checks of the loss, schedule and SAM choices, each naming its key."""
    problems = []
    if c.loss not in LOSS_KINDS:
        problems.append(f"loss: must be one of {', '.join(LOSS_KINDS)}, got {c.loss!r}")
    if c.pseudo_weight < 0:
        problems.append(f"pseudo_weight: must be >= 0, got {c.pseudo_weight}")
    if c.extra_weight < 0:
        problems.append(f"extra_weight: must be >= 0, got {c.extra_weight}")
    if c.extra_per_epoch < 0:
        problems.append(f"extra_per_epoch: must be >= 0 (0: every extra photo every epoch), got {c.extra_per_epoch}")
    if c.photos_per_person < 0:
        problems.append(f"photos_per_person: must be >= 0 (0: every photo of a person every epoch; k: k of them, "
                        f"e.g. 2 of a competition person's 7), got {c.photos_per_person}")
    if c.soft_f1_weight < 0:
        problems.append(f"soft_f1_weight: must be >= 0, got {c.soft_f1_weight}")
    if c.scheduler not in SCHEDULERS:
        problems.append(f"scheduler: must be one of {', '.join(SCHEDULERS)}, got {c.scheduler!r}")
    if c.patience_epochs < 1:
        problems.append(f"patience_epochs: must be >= 1, got {c.patience_epochs}")
    if c.scheduler == "step" and c.decay_epochs <= 0:
        problems.append("decay_epochs: scheduler step needs decay_epochs > 0 (decay every this many epochs)")
    if c.scheduler == "multistep" and not c.decay_milestones:
        problems.append("decay_milestones: scheduler multistep needs the epochs to decay at, e.g. [4, 8]")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if getattr(c, key) < 0:
            problems.append(f"{key}: must be >= 0 (0 turns it off), got {getattr(c, key)}")
    if not 0 <= c.mix_prob <= 1:
        problems.append(f"mix_prob: must be in [0, 1], got {c.mix_prob}")
    if c.person_sampling and (c.head != "multihead" or c.loss.endswith("soft_f1")):
        problems.append("person_sampling: needs head=multihead and a per-head loss (ce or focal): an 18-class "
                        "loss would learn from one image per person and epoch, not only its gender and age")
    if c.face_crop not in ("any", *CROP_METHODS):
        problems.append(f"face_crop: must be one of any, {', '.join(CROP_METHODS)}, got {c.face_crop!r}")
    if not 0 <= c.face_margin <= 2:
        problems.append(f"face_margin: must be in [0, 2] (maskds build --face-margin), got {c.face_margin}")
    if c.tune_decision not in ("none", "class", "head", "age"):
        problems.append(f"tune_decision: must be one of none, class, head, age, got {c.tune_decision!r}")
    if c.sam_rho < 0:
        problems.append(f"sam_rho: must be >= 0 (0 turns SAM off), got {c.sam_rho}")
    if c.sam_rho > 0 and c.grad_accum_steps > 1:
        problems.append("sam_rho: SAM is not supported with gradient accumulation (its perturbation needs the "
                        "whole step's gradient); set grad_accum_steps=1 or sam_rho=0")
    return problems


def full_fit_problems(c) -> list[str]:
    """What folds=full (every person, no validation fold) cannot have: anything that reads validation."""
    if c.folds != FULL:
        return []
    problems = []
    if c.tune_decision != "none":
        problems.append(f"tune_decision: {c.tune_decision!r} is fitted on out-of-fold predictions, which folds=full "
                        "(no validation fold) has none of: set tune_decision=none (infer.py --decision FILE applies "
                        "one fitted on a cross-validated run)")
    if c.validate_raw:
        problems.append("validate_raw: folds=full has no validation fold to score the raw weights on: set it false")
    if c.scheduler == "plateau":
        problems.append("scheduler: plateau follows the validation F1, which folds=full (no validation fold) has "
                        "none of: choose another scheduler")
    return problems
