"""The checkpoint format training writes and inference reads: best-epoch weights as safetensors, with the
run's config and what rebuilds the model and its input inside."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from maskds.config.keys import TrainConfig
from maskds.core.atomic import atomic_path
from maskds.core.errors import UserError
from maskds.core.labels import HEAD_NAMES
from maskds.model.network import resolve_data_config

FORMAT = "1"
RESOLVED_KEYS = ("model", "head", "age_head", "image_size", "mean", "std", "cache_size", "age_thresholds", "heads",
                 "face_crop")


@dataclass(frozen=True)
class BestCheckpoint:
    """What `read_best` returns: weights plus everything needed to rebuild model and transform."""
    state_dict: dict[str, torch.Tensor]
    config: TrainConfig
    resolved: dict[str, Any]
    info: dict[str, Any]


def resolved_metadata(config: TrainConfig, model: torch.nn.Module, cache_size: list[int],
                      face_crop: tuple | None = None) -> dict[str, Any]:
    """The `resolved` metadata of a checkpoint: what inference rebuilds the model and its input from.

    Config values where given, else the backbone's pretrained defaults (image size, mean, std); the
    cache's image size; the age bands training used; the heads it learned (`heads`: all three, or a
    specialist's); the face crop of the cache (`face_crop`: [method, margin] or None), which inference
    repeats on every eval photo.
    """
    return {"model": config.model, "head": config.head, "age_head": config.age_head,
            **resolve_data_config(model, config.image_size, config.mean, config.std),
            "cache_size": [int(v) for v in cache_size], "age_thresholds": list(config.age_thresholds),
            "heads": [h for h in HEAD_NAMES if h in config.heads],
            "face_crop": None if face_crop is None else [str(face_crop[0]), float(face_crop[1])]}


def save_best(path: str | Path, state_dict: dict[str, torch.Tensor], config: TrainConfig,
              resolved: dict[str, Any], info: dict[str, Any]) -> None:
    """Write weights + metadata (config, resolved data config, fold/epoch/metrics) atomically."""
    missing = [k for k in RESOLVED_KEYS if k not in resolved]
    if missing:
        raise ValueError(f"resolved is missing {missing}")
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {
        "maskds_format": FORMAT,
        "config": json.dumps(config.to_dict()),
        "resolved": json.dumps({k: resolved[k] for k in RESOLVED_KEYS}),
        "info": json.dumps(info),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_best(path: str | Path) -> BestCheckpoint:
    """Read a `save_best` file; UserError naming the file when missing or not a maskds checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; train with `accelerate launch train.py` first")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"checkpoint {path} is not a safetensors file ({err})") from None
    if meta.get("maskds_format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a maskds checkpoint (format {meta.get('maskds_format')!r}, "
                        f"expected {FORMAT!r})")
    try:
        config = TrainConfig.from_dict(json.loads(meta["config"]), source=f"{path} metadata")
        resolved, info = json.loads(meta["resolved"]), json.loads(meta["info"])
    except (KeyError, json.JSONDecodeError) as err:
        raise UserError(f"checkpoint {path} has broken maskds metadata ({err})") from None
    return BestCheckpoint(state_dict=state_dict, config=config, resolved=resolved, info=info)
