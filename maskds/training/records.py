"""A fold's run folder and what goes in it: config.yaml, best.safetensors, metrics.jsonl, curves.png."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.console import show
from .checkpoint import save_best
from .config import TrainConfig, save_config
from .curves import plot_curves
from .engine import EpochResult
from .state import FoldState


def epoch_record(epoch: int, result: EpochResult, raw: dict, ema: dict, best: bool, state: FoldState) -> dict:
    """One metrics.jsonl line. `updates`: optimizer updates done so far (across resumes);
    `schedule_step` / `schedule_total`: where the learning-rate schedule stands (`schedule`)."""
    return {"epoch": epoch, "train_loss": result.loss, "lr": result.lr, "updates": state.progress.updates,
            "schedule_step": state.schedule.position(epoch, result.updates), "schedule_total": state.schedule.total,
            "images_per_s": result.images_per_s, "seconds": result.seconds, "raw": raw, "ema": ema, "best": best}


def tracker_scalars(record: dict) -> dict[str, float]:
    """The record's numbers under tracker names (train/..., val_raw/..., val_ema/...)."""
    scalars = {"train/loss": record["train_loss"], "train/lr": record["lr"],
               "train/images_per_s": record["images_per_s"]}
    for which in ("raw", "ema"):
        scalars.update({f"val_{which}/{k}": v for k, v in record[which].items() if k != "n"})
    return scalars


@dataclass(frozen=True)
class FoldFiles:
    """The files of `runs/<name>/fold<k>/`; written by the main process only."""
    fold_dir: Path
    fold: int
    config: TrainConfig
    resolved: dict[str, Any]   # checkpoint.resolved_metadata

    @property
    def metrics(self) -> Path:
        return self.fold_dir / "metrics.jsonl"

    def start(self, epochs_done: int) -> None:
        """Create the folder and config.yaml (kept on resume); keep only the metrics of epochs done."""
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        if not (self.fold_dir / "config.yaml").is_file():
            save_config(self.config, self.fold_dir / "config.yaml")
        keep_metrics_before(self.metrics, epochs_done)

    def write_epoch(self, record: dict, ema_state: dict[str, torch.Tensor]) -> None:
        """Best checkpoint (EMA weights, when the epoch is the best by 18-class macro F1), the metrics
        line, then curves.png (a picture that cannot be drawn never stops training)."""
        if record["best"]:
            info = {"fold": self.fold, "epoch": record["epoch"], "metrics": record["ema"]}
            save_best(self.fold_dir / "best.safetensors", ema_state, self.config, self.resolved, info)
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        try:
            plot_curves(self.metrics, self.fold_dir / "curves.png")
        except Exception as err:  # matplotlib raises many types; the run goes on without the picture
            show(f"[yellow]could not draw {self.fold_dir / 'curves.png'}: {err}[/]")


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
