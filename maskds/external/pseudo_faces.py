"""`maskds pseudo --faces DIR --run RUN OUT`: labels guessed by a trained run for any folder of faces, into an
`--extra`-ready folder.

DIR is an `--extra` folder (`labels.csv` + images, e.g. from `maskds import-faces --format folder`, which frames
bare faces as the competition's photos), or any folder of images (every image, nothing known). For each head
asked (`--heads`, default gender and age) an empty cell is filled where the run's probability of its best value
is at least `--min-prob`; known labels are kept. Gender and age belong to a person (the `person` column, e.g. the
seven photos of `import-faces --draw-masks`): a label known on one of its photos is given to all of them (its
first known age where its known ages fall in one band, as 34 and 35 do; known labels that disagree give none),
and otherwise the mean of its photos' probabilities decides, for all of them at once; the mask is each photo's
own.
The age head gives a band, written as the age range it stands for (0-29, 30-59, 60-), which training learns as
that band. Rows left with no label are dropped (counted).
OUT gets `labels.csv` and the images (hard links where possible); it appears whole or not at all.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from maskds.core.ages import AgeLabel, cell_band
from maskds.core.atomic import atomic_dir
from maskds.core.errors import UserError
from maskds.core.labels import DEFAULT_AGE_THRESHOLDS, GENDER_NAMES, HEAD_NAMES, MASK_NAMES
from maskds.data.extra import EXTRA_CSV, read_extra
from maskds.external.face_sources import list_images

console = Console(stderr=True)
AGE_RANGES = tuple(str(AgeLabel.of_band(b, DEFAULT_AGE_THRESHOLDS)) for b in range(3))  # a band as its years


def read_faces(folder: Path) -> pd.DataFrame:
    """The rows to label: the folder's labels.csv (checked as `--extra` is), or every image with no label."""
    if (folder / EXTRA_CSV).is_file():
        _, problems = read_extra([folder], need_label=False)  # rows without any label are what we label
        if problems:
            raise UserError(f"{folder / EXTRA_CSV}: has problems; fix them and run again (nothing was written):",
                            problems)
        df = pd.read_csv(folder / EXTRA_CSV, dtype=str, keep_default_na=False)
    elif folder.is_dir():
        df = pd.DataFrame({"image": [str(p.relative_to(folder)) for p in list_images(folder)]})
        if df.empty:
            raise UserError(f"{folder}: no images (.jpg, .jpeg, .png) and no {EXTRA_CSV}; nothing to label")
    else:
        raise UserError(f"{folder}: not a folder; --faces takes a folder of images or an --extra folder")
    for c in ("mask", "gender", "age", "person", "framing"):
        if c not in df.columns:
            df[c] = ""
    return df[["image", "mask", "gender", "age", "person", "framing"]]


def persons(df: pd.DataFrame) -> np.ndarray:
    """Each row's person as a group number: rows of one `person` share one; a row without a person is its own."""
    person = df.person.str.strip().to_numpy()
    alone = np.array([f"row {i}" for i in range(len(df))], dtype=object)
    return pd.factorize(np.where(person != "", "person " + person.astype(object), alone))[0]


def fill_head(cells: np.ndarray, p: np.ndarray, group: np.ndarray, names: tuple[str, ...], min_prob: float,
              keys: np.ndarray | None = None) -> tuple[np.ndarray, int, int, int]:
    """One head's cells (stripped strings) with each group's empty cells filled: the group's known label (its
    first, where they all agree), or, where it has none, the best value of its photos' mean probability where
    that reaches `min_prob`. Known cells agree when their `keys` are equal (default: the cells themselves).
    A group whose known labels disagree gets nothing (either would contradict a photo); a known cell keeps its
    own value. Returns (cells, cells copied from the group's known label, cells guessed, groups that disagree)."""
    keys = cells if keys is None else keys
    empty = cells == ""
    n_known = pd.Series(keys, dtype=object).where(~empty).groupby(group).transform("nunique").to_numpy()
    first = pd.Series(cells, dtype=object).where(~empty).groupby(group).transform("first").to_numpy()
    mean = pd.DataFrame(p).groupby(group).transform("mean").to_numpy()
    given = empty & (n_known == 1)
    sure = empty & (n_known == 0) & (mean.max(axis=1) >= min_prob)
    out = cells.copy()
    out[given] = first[given]
    out[sure] = [names[i] for i in mean.argmax(axis=1)[sure]]
    return out, int(given.sum()), int(sure.sum()), len(np.unique(group[empty & (n_known > 1)]))


def guess(df: pd.DataFrame, probs: dict[str, np.ndarray], heads: list[str],
          min_prob: float) -> tuple[pd.DataFrame, dict, dict, dict]:
    """`df` with the empty cells of `heads` filled (see the module docstring); (rows, cells copied from a
    person's known label per head, cells guessed per head, persons with different known labels per head,
    whose empty cells stay empty)."""
    df = df.copy()
    names = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_RANGES}
    group = persons(df)
    copied, filled, mixed = {}, {}, {}
    for head in heads:
        # a person's photos differ in their mask (--draw-masks draws several); gender and age are the person's
        by = np.arange(len(df)) if head == "mask" else group
        cells = df[head].str.strip().to_numpy(dtype=object)
        # ages agree when they fall in one band (34 and 35 are one person's, not a contradiction); a range
        # across two bands has none and is compared as written
        keys = (np.array([b if (b := cell_band(c)) >= 0 else c for c in cells], dtype=object)
                if head == "age" else None)
        df[head], copied[head], filled[head], mixed[head] = fill_head(cells, probs[head], by, names[head], min_prob,
                                                                      keys)
    return df, copied, filled, mixed


def _predict(run: Path, paths: list[Path], tta: str, batch_size: int, heads: list[str],
             face_images: frozenset[int] = frozenset()) -> dict[str, np.ndarray]:
    from maskds.inference.inputs import find_checkpoints
    from maskds.inference.models import check_heads, load_member, make_accelerator
    from maskds.inference.predict import predict_runs
    from maskds.inference.tta import parse_tta

    accelerator = make_accelerator("auto")
    members = [load_member(0, k, p, accelerator.device) for k, p in find_checkpoints(run, None)]
    check_heads(members)
    unlearned = sorted({h for m in members for h in heads if h not in m.heads})
    if unlearned:
        raise UserError(f"--heads {','.join(unlearned)}: run {run} did not learn that (a specialist); ask for "
                        f"the heads it learned: {','.join(members[0].heads)}")
    if "age" in heads and tuple(members[0].spec.age_thresholds) != tuple(DEFAULT_AGE_THRESHOLDS):
        raise UserError(f"--heads age: run {run} cuts its age bands at {list(members[0].spec.age_thresholds)}, "
                        f"not the competition's {list(DEFAULT_AGE_THRESHOLDS)}; its bands are not the ranges "
                        "written here: leave age out of --heads")
    workers = min(16, os.cpu_count() or 1)
    return predict_runs(members, paths, accelerator, batch_size, workers, parse_tta(tta),
                        face_images=face_images)[0]


def pseudo_faces(folder: str | Path, run: str | Path, out: str | Path, heads: list[str], min_prob: float,
                 tta: str = "hflip", batch_size: int = 64) -> Path:
    """Label the faces of `folder` with `run` (see the module docstring) into `out`; returns `out`."""
    folder, run, out = Path(folder), Path(run), Path(out)
    if not 0.0 < min_prob <= 1.0:
        raise UserError(f"--min-prob must be in (0, 1] (the least probability a guessed label needs), got {min_prob}")
    bad = [h for h in heads if h not in HEAD_NAMES]
    if bad or not heads:
        raise UserError(f"--heads: {','.join(bad) or 'none given'}: choose among {', '.join(HEAD_NAMES)}")
    if out.exists():
        raise UserError(f"{out}: already exists; choose another OUT (maskds pseudo never overwrites)")
    df = read_faces(folder)
    faces = frozenset(i for i, f in enumerate(df.framing) if f.strip() == "face")  # seen as `maskds build` cuts them
    probs = _predict(run, [folder / p for p in df.image], tta, batch_size, heads, faces)
    df, copied, filled, mixed = guess(df, probs, heads, min_prob)
    labelled = df[(df[["mask", "gender", "age"]] != "").any(axis=1)]
    if labelled.empty:
        raise UserError(f"no image reached --min-prob {min_prob} for {', '.join(heads)}; nothing was written")
    _write(folder, out, labelled)
    shared = [f"{h} {n}" for h, n in copied.items() if h != "mask"]  # the mask is never copied: each photo's own
    console.print(f"wrote {out}: {len(labelled)} of {len(df)} images with a label; guessed at --min-prob {min_prob}: "
                  + ", ".join(f"{h} {n}" for h, n in filled.items())
                  + ("; copied from the person's other photos: " + ", ".join(shared) if shared else ""))
    for head, n in mixed.items():
        if n:
            console.print(f"[yellow]{head}: {n} person(s) have different known labels on their photos; their "
                          "photos without one were left without one[/]")
    return out


def _write(folder: Path, out: Path, df: pd.DataFrame) -> None:
    with atomic_dir(out, "writing") as work:
        for rel in df.image:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / rel, work / rel)
            except OSError:  # another file system: a copy
                shutil.copy2(folder / rel, work / rel)
        if not df.framing.str.strip().any():  # the column only where the source had its rows marked
            df = df.drop(columns="framing")
        df.to_csv(work / EXTRA_CSV, index=False)
