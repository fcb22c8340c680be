"""Process setup and collective safety: CPU or not under `accelerate launch`, failures every process sees."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from accelerate.utils import gather_object, is_mps_available, is_npu_available, is_xpu_available, parse_flag_from_env

from maskds.core.errors import UserError

T = TypeVar("T")


def use_cpu() -> bool:
    """Whether accelerate must run on the CPU (and so use gloo when processes > 1).

    `accelerate launch` starts multi-process runs through torchrun, which (accelerate 1.15) does not
    pass a launch config's `use_cpu: true` on to the processes; without it a machine with no
    accelerator comes up as one non-distributed process per rank. So: CPU when asked through the
    environment, or when there is nothing else.
    """
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    return not (torch.cuda.is_available() or is_mps_available() or is_xpu_available() or is_npu_available())


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX): there bf16 autocast trains faster than
    fp32; elsewhere oneDNN emulates it, slower than fp32. Read from Linux's cpuinfo flags; False where absent."""
    try:
        with open(cpuinfo) as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_precision(requested: str | None, cpuinfo: str = "/proc/cpuinfo",
                  doing: str = "training") -> tuple[str | None, str | None]:
    """(mixed precision for `Accelerator`, note to show) on the CPU: bf16 as asked where the CPU has it natively,
    fp32 ("no") where it would be emulated, with a note saying that `doing` runs in fp32; None: the request
    stands (with None, accelerate's own choice from the launch config). The one rule training (`fit`),
    inference (`inference.models`) and the benches (`bench/common.py`) follow."""
    if requested == "bf16" and not cpu_has_native_bf16(cpuinfo):
        return "no", ("mixed_precision bf16: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag), where "
                      f"bf16 is emulated and slower than fp32: {doing} in fp32")
    return None, None


class PeerFailed(RuntimeError):
    """Another process failed in a step every process takes together; this one leaves too."""


class ProcessError(UserError):
    """A step failed on this process alone (an OSError: disk full, no permission): it prints its own message."""


def together(accelerator, what: str, fn: Callable[[], T]) -> T | None:
    """Run `fn` on every process, then agree on the outcome: if any process failed, every one raises.

    Without this, a process that fails alone (the main process writing a checkpoint onto a full disk,
    say) leaves the others waiting at their next collective until the backend's timeout (30 minutes
    for NCCL), across nodes too. Here each process reports its outcome in one `gather_object`; the
    failing process raises its own error (an OSError becomes a UserError naming `what`), the others
    raise `PeerFailed` naming the process and the error. Every process must call it, in the same order.
    """
    error, report = None, None
    result = None
    try:
        result = fn()
    except Exception as err:  # reported to the peers, then re-raised below
        error, report = err, f"{type(err).__name__}: {err}"
    reports = gather_object([report]) if accelerator.num_processes > 1 else [report]
    failed = [(rank, r) for rank, r in enumerate(reports) if r is not None]
    if error is not None:
        if isinstance(error, OSError):
            raise ProcessError(f"{what}: {error}") from error
        raise error
    if failed:
        rank, message = failed[0]
        raise PeerFailed(f"process {rank} failed while {what}: {message}")
    return result


def on_main(accelerator, what: str, fn: Callable[[], T]) -> T | None:
    """Run `fn` on the main process only; every process learns whether it failed (see `together`)."""
    return together(accelerator, what, lambda: fn() if accelerator.is_main_process else None)
