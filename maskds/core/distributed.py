"""What `accelerate launch` leaves to the processes to decide: whether they run on the CPU."""
from __future__ import annotations

import torch


def use_cpu() -> bool:
    """Whether accelerate must run on the CPU (and so use gloo when processes > 1).

    `accelerate launch` starts multi-process runs through torchrun, which (accelerate 1.15) does not
    pass a launch config's `use_cpu: true` on to the processes; without it a machine with no
    accelerator comes up as one non-distributed process per rank. So: CPU when asked through the
    environment, or when there is nothing else.
    """
    from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available, parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    return not (torch.cuda.is_available() or is_mps_available() or is_xpu_available() or is_npu_available())
