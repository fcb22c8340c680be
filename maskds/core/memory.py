"""The CPU's memory and priorities for the loops that run a model there: glibc's malloc made to keep freed
memory, and loader workers that decode at the lowest priority (docs/benchmarks.md 10)."""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager, nullcontext

from maskds.core.images import single_threaded_opencv


def background_decoder(worker_id: int) -> None:
    """A loader worker's init on the CPU: one OpenCV thread, and the lowest priority (nice 19), so that
    the workers decode while the model's threads leave a core idle and never stall those threads (each
    waits for the other at every operation): Lite0 at 160x120 with 2 workers on 2 cores, 178-194 forward
    images/s against 140-186 at the default priority (docs/benchmarks.md 10). When their batches run
    out, the model's threads wait and the workers have the cores."""
    single_threaded_opencv(worker_id)
    if hasattr(os, "nice"):  # not on Windows
        os.nice(19)


def loader_worker_init(on_cpu: bool):
    """The loaders' worker init: `background_decoder` where the model runs on the CPU, else only one
    OpenCV thread per worker."""
    return background_decoder if on_cpu else single_threaded_opencv


@contextmanager
def freed_memory_kept():
    """Within: glibc's malloc keeps freed memory for reuse. By default it maps every block over 32 MB afresh
    and unmaps it when freed, so each CPU forward faults in zeroed pages for its large activations again
    (Lite0 at 160x120, batch 64: 134,000 page faults per forward, 40% of its CPU time on a 2-core VM, and the
    bare forward 1.9x faster without them: docs/benchmarks.md 10). Process-wide while it lasts; after it,
    glibc's defaults come back and the memory kept is given back. Not glibc (macOS, musl): nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2**31 - 1)
    try:
        yield
    finally:
        mallopt(m_mmap_max, 65536)  # glibc's defaults, and the memory kept given back
        mallopt(m_trim_threshold, 128 * 1024)
        malloc_trim(0)


def cpu_memory(on_cpu: bool):
    """`freed_memory_kept()` where the model runs on the CPU, else nothing."""
    return freed_memory_kept() if on_cpu else nullcontext()
