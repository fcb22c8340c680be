"""`maskds pseudo`: eval images the models are sure of, added to a copy of a cache as training rows.

    maskds pseudo submission.probs.csv DATA/eval CACHE OUT_CACHE --min-prob 0.9

Each eval image whose largest 18-class probability (in the probabilities file infer.py wrote) is at
least `--min-prob` becomes a training row of OUT_CACHE: its mask, gender and age band are those of
that class (the age in years stays unknown: numeric age heads learn the band as an interval), in fold
-1 (`TRAIN_ONLY_FOLD`: every fold trains on it, none validates on it), marked `origin: pseudo` so that
training can weigh it (`pseudo_weight`). The band is the competition's, an interval of years ([0,30),
[30,60), [60,+)), exact whatever `age_thresholds` a run trains with; a band-based loss (bands head,
18-way head, soft F1) uses it only where the interval lies inside the training band of that index
(`core.labels.band_fits`: under [30,58] the 30-59 band does not). CACHE is not touched; OUT_CACHE
appears whole or not at all.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets
import numpy as np

from maskds.core.atomic import atomic_dir
from maskds.core.errors import UserError
from maskds.core.labels import decode
from maskds.data.cache import (
    FACE_COLUMNS,
    TRAIN_ONLY_FOLD,
    console,
    load_cache,
    no_datasets_bars,
    partial_features,
    with_origin,
)
from maskds.data.cache_meta import META_NAME, cache_crop
from maskds.data.encode import imap_encode, progress_bar


def _check(probs: Path, cache: Path, out: Path, min_prob: float) -> None:
    if not 0.0 < min_prob <= 1.0:
        raise UserError(f"--min-prob must be in (0, 1] (the least class probability an image needs), got {min_prob}")
    if not probs.is_file():
        raise UserError(f"{probs}: no such probabilities file; infer.py writes one beside the submission "
                        "(OUT.probs.csv, or --probs)")
    if out.exists():
        raise UserError(f"{out}: already exists; choose another OUT_CACHE (maskds pseudo never overwrites a cache)")
    if out.resolve() == cache.resolve():
        raise UserError(f"OUT_CACHE {out} is CACHE: the pseudo-labelled cache is written as a copy")


def pseudo_rows(probs_path: Path, data: Path, min_prob: float) -> tuple[list[dict], int]:
    """(rows of the eval images at or above `min_prob`, eval image count), labels from the argmax class."""
    from maskds.inference.inputs import read_info
    from maskds.inference.voting import read_probs

    ids, paths = read_info(data)
    cls = read_probs(probs_path, ids)["class"]
    top, best = cls.max(axis=1), cls.argmax(axis=1)
    rows = []
    for i in np.flatnonzero(top >= min_prob):
        mask, gender, band = decode(int(best[i]))
        rows.append({"person_id": f"pseudo:{ids[i]}", "mask": mask, "gender": gender, "race": "", "age": -1,
                     "fold": TRAIN_ONLY_FOLD, "image_name": ids[i], "path": str(paths[i].resolve()),
                     "age_band": band, "origin": "pseudo"})
    return rows, len(ids)


def _encode(rows: list[dict], size_hw: tuple[int, int], crop: tuple | None) -> list[dict]:
    """The image cells of the rows (and their face boxes when the cache crops faces), as build makes them."""
    with progress_bar() as progress:
        results = list(imap_encode([(r["path"], size_hw, crop) for r in rows], os.cpu_count() or 1, progress,
                                   "pseudo images"))
    bad = [f"{r['path']}: cannot be decoded ({why})" for r, (ok, why, _) in zip(rows, results) if not ok]
    if bad:
        raise UserError(f"{len(bad)} eval image(s) cannot be used", bad[:10])
    return [{"image": {"bytes": value, "path": None}, **({} if face is None else
                                                        {"face_box": face[0], "face_found": face[1]})}
            for _, value, face in results]


def make_pseudo_cache(probs: str | Path, data: str | Path, cache: str | Path, out: str | Path,
                      min_prob: float) -> Path:
    """Write OUT: CACHE's splits plus the pseudo-labelled eval rows (see the module docstring)."""
    probs, data, cache, out = Path(probs), Path(data), Path(cache), Path(out)
    _check(probs, cache, out, min_prob)
    dsd, meta = load_cache(cache)
    train = dsd["train"]
    if "origin" in train.column_names and "pseudo" in set(train["origin"]):
        raise UserError(f"{cache}: already holds pseudo labels; start from the cache without them")
    rows, n_eval = pseudo_rows(probs, data, min_prob)
    if not rows:
        raise UserError(f"no eval image of {probs} has a class probability >= {min_prob}; lower --min-prob")
    crop = cache_crop(meta)
    encoded = _encode(rows, tuple(meta["args"]["size"]), crop)
    features = datasets.Features({**partial_features(), **(FACE_COLUMNS if crop else {})})
    extra = datasets.Dataset.from_list([{**r, **cells} for r, cells in zip(rows, encoded)], features=features)
    splits = dict(dsd)
    splits["train"] = datasets.concatenate_datasets([with_origin(train), extra])
    args = {**meta["args"], "pseudo": {"probs_sha256": hashlib.sha256(probs.read_bytes()).hexdigest(),
                                       "min_prob": min_prob, "images": len(rows)}}
    new_meta = {**meta, "args": args, "counts": {**meta["counts"], "pseudo_images": len(rows)},
                "pseudo": {"probs": str(probs.resolve()), "data": str(data.resolve()),
                           "from_cache": str(cache.resolve())}}
    with no_datasets_bars(), atomic_dir(out, "building") as work:
        datasets.DatasetDict(splits).save_to_disk(str(work))
        (work / META_NAME).write_text(json.dumps(new_meta, indent=2) + "\n")
    per_class = np.bincount([r["mask"] * 6 + r["gender"] * 3 + r["age_band"] for r in rows], minlength=18)
    console.print(f"wrote {out}: {len(train)} training rows + {len(rows)} pseudo-labelled of {n_eval} eval images "
                  f"(class probability >= {min_prob}); per class: {per_class.tolist()}")
    return out
