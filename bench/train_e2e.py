"""train.py end to end (loader, augmentation, EMA, validation all included) against the bare step.

Runs `accelerate launch train.py --config CONFIG` on a real cache for a few epochs of one fold,
reads each epoch's training images/s from metrics.jsonl (the first epoch warms up: workers, cuDNN
autotuning, compilation) and the epoch's wall time with validation, then measures the bare timm
training step (`bench/train_step.py`'s bare loop, in-memory batches) at the same model, batch,
size and precision. The ratio is what the data path and train.py's bookkeeping leave of the model's speed.

    python bench/train_e2e.py --cache CACHE [--config configs/competition.yaml] [--model M] [--batch 64]
        [--epochs 3] [--launch accelerate_configs/single_gpu.yaml] [KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from maskds.config.keys import load_config  # noqa: E402
from maskds.core import memory  # noqa: E402

from common import bench_precision, command, machine  # noqa: E402
from train_step import bare, batches  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def launch_precision(launch: str) -> str:
    """The mixed precision train.py ran under: the launch config's `mixed_precision` (`accelerate launch` sets
    the processes' ACCELERATE_MIXED_PRECISION from it), else the environment's, else none."""
    with open(launch) as f:
        value = (yaml.safe_load(f) or {}).get("mixed_precision")
    return str(value or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no")


def run_train(a, out: Path) -> list[dict]:
    """Train one fold for --epochs; the metrics.jsonl lines."""
    overrides = [f"cache={a.cache}", f"output_dir={out}", "name=bench", "folds=[0]", f"epochs={a.epochs}",
                 "log_with=none", "pretrained=none", f"model={a.model}", f"batch_size={a.batch}", *a.overrides]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", a.launch, str(ROOT / "train.py"),
           "--config", a.config, *overrides]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = (out / "bench" / "fold0" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="arrow cache from `maskds build` (the real data)")
    p.add_argument("--config", default=str(ROOT / "configs/competition.yaml"))
    p.add_argument("--launch", default=str(ROOT / "accelerate_configs/single_gpu.yaml"))
    p.add_argument("--model", default=None, help="default: the config's")
    p.add_argument("--batch", type=int, default=None, help="default: the config's batch_size")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--bare-steps", type=int, default=30)
    p.add_argument("--bare-repeats", type=int, default=2, help="bare-step measurements; the best counts")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more train.py overrides")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    a.model, a.batch = a.model or cfg.model, a.batch or cfg.batch_size
    size = cfg.image_size or [384, 288]
    with tempfile.TemporaryDirectory(prefix="maskds-e2e-") as tmp:
        rows = run_train(a, Path(tmp))
    steady = rows[1:] or rows
    e2e = max(r["images_per_s"] for r in steady)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = bench_precision(launch_precision(a.launch), device)  # train.py's: fp32 where bf16 is emulated
    bare_args = SimpleNamespace(model=a.model, batch=a.batch, size=size, device=device, precision=precision,
                                channels_last=cfg.channels_last, compile=cfg.compile)
    data = batches(a.bare_steps, a.batch, size)
    with memory.cpu_memory(device == "cpu"):  # as train.py has it on the CPU: glibc keeps freed memory
        bare_ips = max(bare(bare_args, data) for _ in range(a.bare_repeats))  # best of: a single short run can read low
    result = {"precision": precision, "images_on_device": cfg.images_on_device, "train_py_img_s": round(e2e, 1), "bare_img_s": round(bare_ips, 1), "ratio": round(e2e / bare_ips, 3),
              "epoch_images_per_s": [round(r["images_per_s"], 1) for r in rows],
              "epoch_train_seconds": [round(r["seconds"], 2) for r in rows]}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"command: {command()}\nmachine: {machine()}")
    print(f"{a.model} {size[0]}x{size[1]} batch {a.batch}, precision {precision}, channels_last {cfg.channels_last}, "
          f"compile {cfg.compile}, images_on_device {cfg.images_on_device}, {a.epochs} epochs of fold 0")
    print(f"train.py images/s per epoch (training, loader included): {result['epoch_images_per_s']}")
    print(f"train.py (best epoch after the first): {result['train_py_img_s']} img/s; bare step: "
          f"{result['bare_img_s']} img/s; ratio {result['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
