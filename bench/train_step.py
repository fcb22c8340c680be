"""Training-step images/s: train.py's loop (maskds.training.engine.train_one_epoch under accelerate, with EMA,
the per-update scheduler, grad clipping and the loss) against a bare timm + torch loop on the same
model, batch, input size and precision. Both read the same in-memory batches, so the data loader is
not measured here (bench/loader.py does that). Measured side by side, alternating, best of --repeats.

    python bench/train_step.py [--model tf_efficientnet_lite0] [--size 192 144] [--batch 32] [--steps 8]
    (GPU: add --device cuda --precision bf16 --channels-last [--compile])

Both sides use the same optimizer kernel (torch's fused AdamW on CUDA) and, with --compile, a
compiled model: the overhead measured is what train.py adds (accelerate, EMA, clipping, schedule,
the loss, progress), not a choice the bare loop could make too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from maskds.config.keys import TrainConfig  # noqa: E402
from maskds.core import memory  # noqa: E402
from maskds.training.engine import StepOptions, train_one_epoch  # noqa: E402
from maskds.training.losses import MaskLoss  # noqa: E402
from maskds.model.network import create_model  # noqa: E402
from maskds.training.setup import build_model, optimizer_kernels  # noqa: E402
from maskds.training.schedule import build_schedule  # noqa: E402
from maskds.training.state import FoldState, RunProgress  # noqa: E402

from common import bench_precision, command, machine  # noqa: E402


def batches(n: int, batch: int, size, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    # uint8 images, as the loaders deliver them (the model normalizes)
    return [(torch.randint(0, 256, (batch, 3, *size), generator=g, dtype=torch.uint8),
             torch.randint(0, 18, (batch,), generator=g)) for _ in range(n)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ours(a, data) -> float:
    """maskds: Accelerator + prepare + train_one_epoch (EMA, timm scheduler, clipping, MaskLoss)."""
    from accelerate import Accelerator
    from timm.optim import create_optimizer_v2

    acc = Accelerator(cpu=a.device == "cpu", mixed_precision=a.precision)
    cfg = TrainConfig(epochs=1, lr=1e-3, model=a.model, pretrained="none", channels_last=a.channels_last,
                      compile=a.compile)
    model, ema = build_model(cfg, acc.device)  # as train.py builds them: channels_last, the EMA
    opt = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                              **optimizer_kernels("adamw", acc.device))
    model, opt = acc.prepare(model, opt)
    schedule = build_schedule(opt, cfg.epochs, cfg.warmup_epochs, cfg.lr, cfg.min_lr, len(data), 1)
    state = FoldState(model, ema, opt, schedule, RunProgress(),
                      step_model=torch.compile(model) if a.compile else None)
    loss_fn = MaskLoss("multihead", "ce", 0.1)
    dev = [(x.to(acc.device), y.to(acc.device)) for x, y in data]
    options = StepOptions(grad_clip=1.0, channels_last=a.channels_last)
    train_one_epoch(acc, state, loss_fn, dev[:3], options)
    sync(a.device)
    start = time.perf_counter()
    train_one_epoch(acc, state, loss_fn, dev, options)
    sync(a.device)
    return len(data) * a.batch / (time.perf_counter() - start)


def bare(a, data) -> float:
    """Bare timm + torch: forward, cross-entropy per head, backward, AdamW step; no EMA, no clipping."""
    model = create_model(a.model, "multihead", drop_rate=0.2)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(a.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05,
                            **optimizer_kernels("adamw", torch.device(a.device)))
    forward = torch.compile(model) if a.compile else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = torch.amp.GradScaler(enabled=a.precision == "fp16")
    mf = torch.channels_last if a.channels_last else torch.contiguous_format
    dev = [(x.to(a.device).contiguous(memory_format=mf), y.to(a.device)) for x, y in data]

    def step(x, y):
        with torch.autocast(a.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = forward(x)
            loss = F.cross_entropy(out[:, :3], y // 6) + F.cross_entropy(out[:, 3:5], (y // 3) % 2) + F.cross_entropy(out[:, 5:], y % 3)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for x, y in dev[:3]:
        step(x, y)
    sync(a.device)
    start = time.perf_counter()
    for x, y in dev:
        step(x, y)
    sync(a.device)
    return len(data) * a.batch / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, nargs=2, default=[192, 144], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps per measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"],
                   help="mixed precision of both sides; on a CPU without native bf16, bf16 runs fp32 as in train.py")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    a.precision = bench_precision(a.precision, a.device)  # train.py's: fp32 on a CPU that would emulate bf16
    data = batches(a.steps, a.batch, a.size)
    best = {"ours": 0.0, "bare": 0.0}
    with memory.cpu_memory(a.device == "cpu"):  # both sides as train.py has it on the CPU: freed memory kept
        for _ in range(a.repeats):
            best["bare"] = max(best["bare"], bare(a, data))
            best["ours"] = max(best["ours"], ours(a, data))
    overhead = best["bare"] / best["ours"] - 1.0
    result = {"precision": a.precision, "ours_img_s": round(best["ours"], 1), "bare_img_s": round(best["bare"], 1),
              "overhead_pct": round(100 * overhead, 1)}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"command: {command()}\nmachine: {machine()}")
    print(f"{a.model} {a.size[0]}x{a.size[1]}, batch {a.batch}, {a.device}, precision {a.precision}, "
          f"channels_last {a.channels_last}, compile {a.compile}, {a.steps} steps, best of {a.repeats}")
    print(f"train.py loop: {result['ours_img_s']} img/s; bare loop: {result['bare_img_s']} img/s; "
          f"overhead {result['overhead_pct']}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
