"""Helpers for the training tests: launching train.py and reading a fold's metrics."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCEL = ROOT / "accelerate_configs"
TINY = ["model=test_efficientnet", "pretrained=none", "image_size=[64,48]", "num_workers=0",
        "log_with=none", "augment=light"]


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
