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
    bare forward 1.9x faster without them: docs/benchmarks.md 10). Process-wide while it lasts, and in the
    loader workers forked within it (each keeps the memory it peaked at). After it, glibc behaves as it does
    once its self-adjusting threshold has met large blocks (`mallopt` switches that adjustment off for good):
    blocks over 32 MB mapped, 64 MB kept before trimming; the memory kept is given back. Nothing changes where
    the user set glibc's malloc through the environment (MALLOC_*, GLIBC_TUNABLES) or without glibc (macOS,
    musl)."""
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        yield
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4  # malloc.h
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2**31 - 1)
    try:
        yield
    finally:
        mallopt(m_mmap_max, 65536)
        mallopt(m_mmap_threshold, 32 * 2**20)  # the dynamic threshold's ceiling on 64-bit glibc
        mallopt(m_trim_threshold, 64 * 2**20)  # twice it, as the dynamic adjustment sets it
        malloc_trim(0)


def cpu_memory(on_cpu: bool):
    """`freed_memory_kept()` where the model runs on the CPU, else nothing."""
    return freed_memory_kept() if on_cpu else nullcontext()
