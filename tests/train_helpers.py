"""Helpers for the training tests: a tiny cache in the documented schema, and launching train.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ACCEL = ROOT / "accelerate_configs"
TINY = ["model=test_efficientnet", "pretrained=none", "image_size=[64,48]", "num_workers=0",
        "log_with=none", "augment=light"]


def make_tiny_cache(path: Path, persons: int = 30, size_hw=(64, 48), folds: int = 3, seed: int = 0) -> Path:
    """A cache (format 1 schema) of drawn persons whose mask, gender and age show as colour cues."""
    import datasets
    from PIL import Image

    from maskds import images, labels

    rng = np.random.default_rng(seed)
    h, w = size_hw
    rows = {k: [] for k in ("image", "person_id", "mask", "gender", "race", "age", "fold", "image_name", "path")}
    for p in range(persons):
        gender, age = int(rng.integers(2)), int(rng.choice([22, 25, 35, 45, 60]))
        pid = f"{p:06d}"
        for stem, mask in labels.IMAGE_STEMS.items():
            arr = rng.integers(90, 140, size=(h, w, 3)).astype(np.uint8)
            arr[: h // 4, :, :] = (40, 40, 200) if gender else (200, 120, 40)          # hair: gender
            arr[h // 4: h // 2, w // 4: 3 * w // 4, :] = min(255, 60 + 3 * age)        # face: age
            arr[h // 2: 3 * h // 4, w // 4: 3 * w // 4, :] = [(20, 200, 20), (200, 20, 200), (230, 200, 180)][mask]
            rows["image"].append({"bytes": images.encode_jpeg(Image.fromarray(arr)), "path": None})
            rows["person_id"].append(pid)
            rows["mask"].append(mask)
            rows["gender"].append(gender)
            rows["race"].append("Asian")
            rows["age"].append(age)
            rows["fold"].append(p % folds)
            rows["image_name"].append(stem)
            rows["path"].append(f"train/images/{pid}/{stem}.jpg")
    features = datasets.Features({"image": datasets.Image(), "person_id": datasets.Value("string"),
                                  "mask": datasets.Value("int64"), "gender": datasets.Value("int64"),
                                  "race": datasets.Value("string"), "age": datasets.Value("int64"),
                                  "fold": datasets.Value("int64"), "image_name": datasets.Value("string"),
                                  "path": datasets.Value("string")})
    train = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": train}).save_to_disk(str(path))
    meta = {"format_version": 1, "args": {"size": list(size_hw), "folds": folds, "seed": seed, "corrections": "none"},
            "corrections": {"source": "none", "sha256": "", "applied": []}, "inputs_fingerprint": "test",
            "counts": {"train": len(train)}}
    (path / "maskds_cache.json").write_text(json.dumps(meta))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT)}


def launch(args: list[str], accel_config: str | None = "cpu_2proc.yaml", extra: list[str] = (),
           timeout: int = 300) -> subprocess.CompletedProcess:
    """Run train.py (under `accelerate launch` with a config from accelerate_configs/, or plain python)."""
    if accel_config is None:
        cmd = [sys.executable, str(ROOT / "train.py"), *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCEL / accel_config),
               *extra, str(ROOT / "train.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def metrics_lines(fold_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (fold_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
