"""Atomic accelerate state saves (`state/`) and the state a run resumes from."""
from __future__ import annotations

import shutil
from pathlib import Path

from maskds.core.distributed import on_main, together
from maskds.core.errors import UserError

STATE_DIR = "state"


def save_state_atomic(accelerator, fold_dir: str | Path) -> Path:
    """`accelerator.save_state` into `state.tmp`, then swap it in for `state/`.

    A run killed mid-save leaves the previous `state/` intact. Every process writes its RNG file
    into the same folder, so the output folder must be shared by all nodes. A failed write on any
    process (disk full) makes every process leave with the error named, none left waiting.
    """
    final = Path(fold_dir) / STATE_DIR
    tmp = Path(fold_dir) / (STATE_DIR + ".tmp")
    old = Path(fold_dir) / (STATE_DIR + ".old")
    on_main(accelerator, f"clearing {tmp}", lambda: shutil.rmtree(tmp) if tmp.exists() else None)
    together(accelerator, f"saving the training state to {tmp}", lambda: accelerator.save_state(str(tmp)))

    def swap() -> None:
        shutil.rmtree(old, ignore_errors=True)  # left by a run killed while deleting it
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    on_main(accelerator, f"moving {tmp} to {final}", swap)
    return final


def resume_dir(resume: str, fold_dir: str | Path) -> Path | None:
    """The state folder to resume from: None for 'none', the fold's state/ for 'auto', or a path."""
    if resume == "none":
        return None
    if resume == "auto":
        state = Path(fold_dir) / STATE_DIR
        if not state.is_dir() and (Path(fold_dir) / (STATE_DIR + ".old")).is_dir():
            state = Path(fold_dir) / (STATE_DIR + ".old")  # killed between the two renames
        return state if state.is_dir() else None
    state = Path(resume)
    if not state.is_dir():
        raise UserError(f"resume: {resume} is not a state folder (expected e.g. runs/NAME/fold0/state)")
    return state
