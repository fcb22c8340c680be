"""The fold plan: which models a run trains, which of them validate, and where each one writes.

A run trains one model per validation fold (`fold<k>/`, validated on fold k's persons, trained on the others)
or, with `folds=full`, one model on every person (`full/`, validated on none). Whatever names, places, splits
or finds a run's models asks this module; no other code tells the full model apart by a fold number.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskds.core.errors import UserError

FULL = "full"                  # folds=full's model: its name in configs, on the command line and as a folder
OOF_FILE = "oof.csv"           # a validating model's out-of-fold predictions (training.records writes it)
BEST_FILE = "best.safetensors"  # a model's best (EMA) weights (model.checkpoint's format)


@dataclass(frozen=True)
class FoldModel:
    """One model of a run: `fold` k validates on fold k and trains on the others; None trains on every person
    and validates on none (folds=full)."""
    fold: int | None = None

    @classmethod
    def of(cls, fold: FoldModel | int) -> FoldModel:
        """A model of the plan, or fold number k's."""
        return fold if isinstance(fold, FoldModel) else cls(int(fold))

    @property
    def validates(self) -> bool:
        return self.fold is not None

    @property
    def dir_name(self) -> str:
        """Its folder in the run: `fold<k>` or `full`."""
        return f"fold{self.fold}" if self.validates else FULL

    @property
    def label(self) -> str:
        """How messages and progress lines name it: "fold k" or "full"."""
        return f"fold {self.fold}" if self.validates else FULL

    @property
    def tag(self) -> int | str:
        """What records and trackers store as its fold: k, or "full"."""
        return self.fold if self.validates else FULL

    @property
    def order(self) -> tuple[int, int]:
        """Where it comes in a run's list of models: `full` first, then the folds by number."""
        return (1, self.fold) if self.validates else (0, 0)

    def validation_rows(self, folds: np.ndarray) -> np.ndarray:
        """Which rows (by their fold column) it validates on: fold k's, or none."""
        return folds == self.fold if self.validates else np.zeros(len(folds), dtype=bool)


FULL_MODEL = FoldModel(None)


def plan_models(folds: str | list[int], available: list[int]) -> list[FoldModel]:
    """The models a run with config `folds` ("all", "full" or fold ids) trains, checked against the cache's folds."""
    if folds == "all":
        return [FoldModel(k) for k in sorted(available)]
    if folds == FULL:
        return [FULL_MODEL]
    missing = [k for k in folds if k not in available]
    if missing:
        raise UserError(f"folds: fold(s) {missing} are not in the cache (it has {sorted(available)})")
    return [FoldModel(k) for k in folds]


def parse_models(text: str) -> list[FoldModel]:
    """Models from a comma-separated list of fold numbers and `full`, e.g. "0,1,full", in order, each once;
    ValueError naming an item that is neither, or an empty list."""
    models = []
    for item in (i.strip() for i in text.split(",")):
        if item == FULL:
            models.append(FULL_MODEL)
        elif item.isdigit():
            models.append(FoldModel(int(item)))
        elif item:
            raise ValueError(f"{item!r} is neither a fold number nor {FULL}; e.g. 0,1,{FULL}")
    if not models:
        raise ValueError(f"no fold named in {text!r}; e.g. 0,1,{FULL}")
    return list(dict.fromkeys(models))


def names(models) -> str:
    """Models named for a message, the folds first, then full: "fold 0, fold 1, full"."""
    return ", ".join(m.label for m in sorted(models, key=lambda m: (not m.validates, m.fold or 0)))


def run_models(run: Path) -> dict[FoldModel, Path]:
    """The model folders a run holds (`fold<k>/`, `full/`), in `FoldModel.order`; UserError if `run` is no folder."""
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist; pass runs/<name> as written by train.py")
    found = {FoldModel(int(d.name[4:])): d for d in run.glob("fold*") if d.is_dir() and d.name[4:].isdigit()}
    if (run / FULL).is_dir():
        found[FULL_MODEL] = run / FULL
    return dict(sorted(found.items(), key=lambda item: item[0].order))
