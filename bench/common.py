"""Shared bits of the benchmarks: the machine line, the precision, synthetic inputs, and the printed command."""
from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

import torch


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{os.cpu_count()} CPUs ({cpu}){gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def bench_precision(precision: str, device: str) -> str:
    """The mixed precision a benchmark runs `device` in: the one train.py and infer.py would take, i.e. on the
    CPU fp32 where bf16 would be emulated (`maskds.core.distributed.cpu_precision`, its note on stderr)."""
    if device != "cpu":
        return precision
    from maskds.core.distributed import cpu_precision

    chosen, note = cpu_precision(precision, doing="benchmarking")
    if note:
        print(note, file=sys.stderr)
    return chosen or precision


def command() -> str:
    """The command line that produced this output."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def synthetic_data(persons: int, root: Path | None = None) -> Path:
    """Raw synthetic data (maskds synth) under `root` or a temporary folder; reused when present."""
    from maskds.synth.generate import synthesize

    root = root or Path(tempfile.mkdtemp(prefix="maskds-bench-")) / "data"
    if not (root / "train" / "train.csv").is_file():
        synthesize(root, persons=persons, eval_persons=max(4, persons // 4), seed=0)
    return root


def synthetic_cache(data: Path, size_hw: tuple[int, int], cache: Path | None = None) -> Path:
    """The arrow cache of `data` at `size_hw` (maskds build), next to the data unless given."""
    from maskds.data.cache import build_cache

    cache = cache or data.parent / f"cache_{size_hw[0]}x{size_hw[1]}"
    build_cache(data, cache, size_hw=size_hw, folds=5, seed=42, corrections="default", num_proc=None, force=False)
    return cache
