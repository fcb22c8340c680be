"""Encoding images for a cache on a pool of worker processes: decode, face crop (optional), resize, JPEG."""
from __future__ import annotations

import signal
from multiprocessing import get_context
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from maskds.core import images

console = Console(stderr=True)


def encode_one(task: tuple) -> tuple[bool, bytes | str, tuple | None]:
    """Task (path, size (H, W) or None, crop (method, margin) or None) -> (True, JPEG bytes at the cache
    size, (face box, found) with a crop else None) or (False, why the image cannot be decoded, None).
    Runs in workers; size None only checks that the image decodes."""
    path, size_hw, crop = (*task, None)[:3]
    try:
        if size_hw is None:  # decode-only check
            images.open_rgb(path)
            return True, b"", None
        img, box, found = images.prepare_with_box(path, size_hw, crop)
        return True, images.encode_jpeg(img), None if box is None else (box, found)
    except Exception as err:  # any decoder failure is a bad input file, reported with its path
        return False, f"{type(err).__name__}: {err}", None


def _init_worker() -> None:
    # Ctrl-C is handled once, by the main process, which then terminates the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def imap_encode(tasks: list, num_proc: int, progress: Progress, label: str):
    """Run `encode_one` over tasks in order, on `num_proc` processes, advancing a progress bar."""
    bar = progress.add_task(label, total=len(tasks))
    if num_proc <= 1 or len(tasks) < 2:
        for t in tasks:
            result = encode_one(t)
            progress.advance(bar)
            yield result
        return
    with get_context("fork").Pool(num_proc, initializer=_init_worker) as pool:
        for result in pool.imap(encode_one, tasks, chunksize=8):
            progress.advance(bar)
            yield result


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def undecodable(data: Path, paths: list[str], num_proc: int) -> list[str]:
    """A problem line for each image that does not decode (used when the layout has other problems)."""
    with progress_bar() as progress:
        results = list(imap_encode([(str(data / p), None) for p in paths], num_proc, progress, "checking images"))
    return [f"{data / p}: cannot be decoded as an image ({why}); replace or remove it"
            for p, (ok, why, _) in zip(paths, results) if not ok]


