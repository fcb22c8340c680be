"""Helpers for the data tests: small editable copies of the session's synthetic raw data."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path


def copy_raw(src: Path, dst: Path, persons: int = 4, eval_images: int | None = 7) -> Path:
    """Copy the first `persons` train persons (and `eval_images` eval rows; None drops eval/) of src."""
    with open(src / "train" / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:1 + persons]
    (dst / "train" / "images").mkdir(parents=True)
    with open(dst / "train" / "train.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *rows])
    for row in rows:
        shutil.copytree(src / "train" / "images" / row[-1], dst / "train" / "images" / row[-1])
    if eval_images is not None:
        with open(src / "eval" / "info.csv", newline="") as f:
            info = list(csv.reader(f))[: 1 + eval_images]
        (dst / "eval" / "images").mkdir(parents=True)
        with open(dst / "eval" / "info.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(info)
        for image_id, _ in info[1:]:
            shutil.copy2(src / "eval" / "images" / image_id, dst / "eval" / "images" / image_id)
    return dst


def person_dirs(root: Path) -> list[Path]:
    """The person folders of a raw root, sorted."""
    return sorted(p for p in (root / "train" / "images").iterdir() if p.is_dir() and not p.name.startswith("."))


def rewrite_csv(path: Path, edit) -> None:
    """Apply edit(rows) -> rows to a CSV file (header included)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(edit(rows))
