"""Files written whole or not at all: written under a temporary name beside the target, then renamed."""
from __future__ import annotations

import os
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
