"""Process setup and collective safety: CPU or not under `accelerate launch`, failures every process sees."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from accelerate.utils import gather_object, is_mps_available, is_npu_available, is_xpu_available, parse_flag_from_env

from .errors import UserError

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
