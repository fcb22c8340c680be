"""infer.py's inputs, checked up front: a run's fold checkpoints and an eval folder's images."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from maskds.config.plan import BEST_FILE, FULL, FoldModel, names, run_models
from maskds.core.errors import UserError, shown

SHOW = 10  # problems listed by name before "and N more"


def find_checkpoints(run: Path, folds: list[FoldModel] | None) -> list[tuple[FoldModel, Path]]:
    """(model, best.safetensors) pairs of a run folder: every model it holds weights for (the fold plan's
    `fold<k>/` and `full/`), or only the models named (`plan.parse_models`), named in messages by their label."""
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist; pass --run runs/<name> as written by train.py")
    found = {m: d / BEST_FILE for m, d in run_models(run).items() if (d / BEST_FILE).is_file()}
    if not found:
        raise UserError(f"run folder {run} holds no fold<k>/{BEST_FILE} or {FULL}/{BEST_FILE}; train it first "
                        "(accelerate launch train.py ...) or pass the run's own folder")
    if folds is None:
        return list(found.items())
    missing = [m for m in folds if m not in found]
    if missing:
        raise UserError(f"run folder {run} has no weights for {names(missing)}; it has {names(found)}")
    return [(m, found[m]) for m in folds]


def read_info(data: Path) -> tuple[list[str], list[Path]]:
    """ImageIDs and image paths of an eval folder (`info.csv` + `images/`), all checked up front.

    Cheap enough for 12,600 images: existence plus a header parse (PIL `Image.open` reads no pixels).
    """
    info = data / "info.csv"
    if not info.is_file():
        raise UserError(f"{info} does not exist; --data must be the eval folder holding info.csv and images/")
    try:
        df = pd.read_csv(info, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{info} is empty; it needs a header ImageID,ans and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{info} is not a readable CSV: {err}") from None
    missing = [c for c in ("ImageID", "ans") if c not in df.columns]
    if missing:
        raise UserError(f"{info} has no {' / '.join(missing)} column (it has: {', '.join(df.columns)}); "
                        "expected the competition's header ImageID,ans")
    if len(df) == 0:
        raise UserError(f"{info} lists no images; it needs one row per image under {data / 'images'}")
    ids = df["ImageID"].tolist()
    dup = sorted(set(df["ImageID"][df["ImageID"].duplicated()]))
    if dup:
        raise UserError(f"{info} lists ImageID(s) more than once: {', '.join(dup[:SHOW])}")
    paths = [data / "images" / i for i in ids]
    problems = []
    for i, p in zip(ids, paths):
        if not p.is_file():
            problems.append(f"{i}: missing ({p})")
            continue
        try:
            with Image.open(p):
                pass
        except Exception as err:  # PIL raises several types for a broken or non-image file
            problems.append(f"{i}: unreadable image ({type(err).__name__}: {err})")
    if problems:
        raise UserError(f"{len(problems)} of the {len(ids)} images in {info} cannot be used", shown(problems, SHOW))
    return ids, paths
