"""A fold's run folder and what goes in it: config.yaml, best.safetensors, oof.csv, metrics.jsonl, curves.png."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch

from maskds.config.keys import TrainConfig, save_config
from maskds.config.plan import OOF_FILE, FoldModel
from maskds.core.atomic import atomic_path
from maskds.core.console import show
from maskds.core.labels import DEFAULT_AGE_THRESHOLDS
from maskds.core.probabilities import Probs, to_frame
from maskds.model.checkpoint import save_best
from maskds.training.curves import plot_curves
from maskds.training.datasets import class_labels
from maskds.training.engine import EpochResult
from maskds.training.state import FoldState


def epoch_record(epoch: int, result: EpochResult, raw: dict | None, ema: dict, best: bool, state: FoldState) -> dict:
    """One metrics.jsonl line (`raw`: null unless `validate_raw`). `updates`: optimizer updates so far (across resumes);
    `schedule_step` / `schedule_total`: where the learning-rate schedule stands (`schedule`)."""
    return {"epoch": epoch, "train_loss": result.loss, "lr": result.lr, "updates": state.progress.updates,
            "schedule_step": state.schedule.position(epoch, result.updates), "schedule_total": state.schedule.total,
            "images_per_s": result.images_per_s, "seconds": result.seconds, "raw": raw, "ema": ema, "best": best}


def tracker_scalars(record: dict) -> dict[str, float]:
    """The record's numbers under tracker names (train/..., val_raw/..., val_ema/...)."""
    scalars = {"train/loss": record["train_loss"], "train/lr": record["lr"],
               "train/images_per_s": record["images_per_s"]}
    for which in ("raw", "ema"):
        scalars.update({f"val_{which}/{k}": v for k, v in (record[which] or {}).items() if k != "n"})
    return scalars


# oof.csv: these columns, then `pred` and the probability columns of `core.probabilities.PROB_COLUMNS`.
OOF_INDEX = ("fold", "row", "person_id", "image_name", "path", "mask", "gender", "age", "truth", "cache_id")


def oof_index(table: datasets.Dataset, rows: np.ndarray, fold: int, cache_id: str) -> pd.DataFrame:
    """Who the out-of-fold rows are: cache row, person, image, labels and the truth on the competition's
    bands (the scored classes), in validation order; `cache_id` names the cache they come from."""
    rows = np.asarray(rows, dtype=np.int64)
    part = table.select_columns(["person_id", "image_name", "path", "mask", "gender", "age"]).select(rows)
    frame = part.to_pandas()
    frame.insert(0, "row", rows)
    frame.insert(0, "fold", fold)
    frame["truth"] = class_labels(table, DEFAULT_AGE_THRESHOLDS)[rows]
    frame["cache_id"] = cache_id
    return frame[list(OOF_INDEX)]


@dataclass(frozen=True)
class FoldFiles:
    """The files of `runs/<name>/fold<k>/`; written by the main process only."""
    fold_dir: Path
    fold: FoldModel
    config: TrainConfig
    resolved: dict[str, Any]   # checkpoint.resolved_metadata
    oof_index: pd.DataFrame    # `oof_index` of the fold's validation rows

    @property
    def metrics(self) -> Path:
        return self.fold_dir / "metrics.jsonl"

    def start(self, epochs_done: int) -> None:
        """Create the folder and config.yaml (kept on resume); keep only the metrics of epochs done."""
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        if not (self.fold_dir / "config.yaml").is_file():
            save_config(self.config, self.fold_dir / "config.yaml")
        keep_metrics_before(self.metrics, epochs_done)

    def write_epoch(self, record: dict, ema_state: dict[str, torch.Tensor], ema_probs: Probs | None) -> None:
        """When the epoch is the best by EMA 18-class macro F1 (a specialist: its heads' mean F1): its
        checkpoint (EMA weights) and its out-of-fold predictions (oof.csv); then the metrics line and
        curves.png (a picture that cannot be drawn never stops training)."""
        if record["best"]:
            info = {"fold": self.fold.tag, "epoch": record["epoch"], "metrics": record["ema"]}
            save_best(self.fold_dir / "best.safetensors", ema_state, self.config, self.resolved, info)
            if ema_probs is not None:  # folds=full validates nothing: no out-of-fold predictions
                self.write_oof(ema_probs)
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        try:
            plot_curves(self.metrics, self.fold_dir / "curves.png")
        except Exception as err:  # matplotlib raises many types; the run goes on without the picture
            show(f"[yellow]could not draw {self.fold_dir / 'curves.png'}: {err}[/]")


    def write_oof(self, probs: Probs) -> Path:
        """oof.csv: every validation image with its truth, the prediction and the probabilities."""
        if len(probs["class"]) != len(self.oof_index):
            raise RuntimeError(f"{len(probs['class'])} validation predictions for {len(self.oof_index)} images")
        table = to_frame(self.oof_index["path"], probs).drop(columns="ImageID")
        frame = pd.concat([self.oof_index.reset_index(drop=True), table], axis=1)
        frame.insert(len(OOF_INDEX), "pred", probs["class"].argmax(1))
        with atomic_path(self.fold_dir / OOF_FILE) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
        return self.fold_dir / OOF_FILE


def keep_metrics_before(metrics_file: Path, epoch: int) -> None:
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
