"""core/memory.py: glibc keeps freed memory within `freed_memory_kept`, loader workers decode at low priority."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from maskds.core import memory
from maskds.core.images import single_threaded_opencv
from maskds.core.memory import freed_memory_kept
from maskds.training.datasets import make_loader


def _faults(numel: int) -> int:
    """Minor page faults of filling a fresh float tensor of `numel` (freed at once)."""
    import resource  # not on Windows

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(numel)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_while_predicting_on_the_cpu_not_faulted_in_again(monkeypatch):
    big, medium = 16 * 2**20, 2 * 2**20  # 64 MB, 8 MB
    for name in [k for k in os.environ if k.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(name, raising=False)
    _faults(big)
    default = _faults(big)  # glibc maps such a block afresh each time, and unmaps it when freed
    with freed_memory_kept():
        kept = [_faults(big) for _ in range(6)]  # the heap grows by a block or two first, then serves from itself
    assert default > 0 and kept[-1] * 10 <= default and kept[-2] * 10 <= default
    assert _faults(big) * 10 > default  # after it, blocks over 32 MB are mapped afresh again
    medium_after = [_faults(medium) for _ in range(4)]
    assert medium_after[-1] * 10 <= default // 8  # smaller ones served from the heap (8 MB: an eighth of the pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_malloc_setting_of_the_users_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    big = 16 * 2**20
    _faults(big)
    default = _faults(big)
    with freed_memory_kept():
        kept = [_faults(big) for _ in range(4)]
    assert default > 0 and min(kept) * 2 > default  # still mapped afresh each time: nothing was changed


def test_loader_workers_decode_at_the_lowest_priority_only_where_the_model_runs_on_the_cpu():
    data = torch.zeros(4, 1)
    assert make_loader(data, 2, True, 1, torch.device("cpu")).worker_init_fn is memory.background_decoder
    cuda = make_loader(data, 2, True, 1, torch.device("cuda"))
    assert cuda.worker_init_fn is single_threaded_opencv and cuda.pin_memory


@pytest.mark.skipif(not hasattr(os, "nice"), reason="os.nice")
def test_a_background_decoder_lowers_its_own_priority_to_nice_19():
    import multiprocessing

    before = os.nice(0)
    if before == 19:
        pytest.skip("this process runs at nice 19 already: the workers' priority cannot be told apart")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply(_niceness_after_init) == 19
    assert os.nice(0) == before  # this process untouched


def _niceness_after_init() -> int:
    memory.background_decoder(0)
    return os.nice(0)
