"""Files written whole or not at all: written under a temporary name beside the target, then renamed."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`: it replaces `path` when the block succeeds, else is removed.

    Readers (and a run killed mid-write) never see half a file. `suffix` keeps an extension for
    writers that choose the format from it (matplotlib's savefig).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: str | Path, tag: str, replace: bool = False) -> Iterator[Path]:
    """Yield an empty folder to fill: it becomes `target` when the block succeeds; on any failure nothing is left.

    The folder sits alone in a private one beside `target` (`temp_dir(target, tag)`), deleted afterwards
    whatever happens, so a caller may keep scratch files beside it (`folder.parent`). With `replace`, an
    existing `target` is moved aside into that private folder first (and deleted with it); without, the
    caller checks that `target` is free (a rename onto a non-empty folder fails)."""
    target = Path(target)
    work = temp_dir(target, tag)
    try:
        new = work / "new"
        new.mkdir()
        yield new
        old = work / "previous"
        if replace and target.exists():
            target.rename(old)
        try:
            new.rename(target)
        except BaseException:
            if old.exists():  # put the old one back rather than delete it with `work`
                old.rename(target)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def temp_dir(target: str | Path, tag: str) -> Path:
    """A new empty folder beside `target` (`.NAME.TAG-XXXX`), to be renamed to `target` once whole.

    `tempfile.mkdtemp` makes it private (0700), a mode the rename would carry over to the finished
    folder; it gets the mode a plain `mkdir` would (0777 less the umask)."""
    import tempfile

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    os.chmod(work, 0o777 & ~_umask())
    return work


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc/self/status, since 4.7);
    elsewhere set and restored at once (the umask is process-wide: another thread could see it changed)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask
