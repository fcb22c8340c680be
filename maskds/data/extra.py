"""`maskds build --extra DIR`: images from elsewhere with whatever labels they have.

DIR holds the images and `labels.csv`, one row per image:

    image,mask,gender,age,person
    faces/0001.jpg,,female,34,p17        # no mask label
    masks/a.png,wear,,,                  # a mask state and nothing else

`image` (a path under DIR) is required; `mask` (wear | incorrect | not_wear), `gender` (male |
female), `age` (whole years, or a range such as `20-29` or `70-`, learned as the competition's age band
that holds it), `person` (groups images of one person) and `framing` (`photo`, the default: a photo
like the competition's, face-cropped as the cache is; `face`: already an aligned face crop, which a
cache only cuts to its height:width shape and resizes, as `maskds import-faces --frame crop` marks its rows)
are optional columns, and an empty cell is a missing label. The rows go into the cache's train split in fold -1
(`TRAIN_ONLY_FOLD`: every fold trains on them, none validates on them), missing labels as -1, marked
`origin: extra`; the loss leaves out the heads a row has no label for.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from ..core.errors import UserError
from ..core.labels import GENDER_NAMES, MASK_NAMES, age_band
from .face_sources import parse_age

EXTRA_CSV = "labels.csv"
COLUMNS = ("image", "mask", "gender", "age", "person", "framing")
FRAMINGS = ("photo", "face")
SHOW = 20  # problems listed before "and N more"


def _label(value: str, names: tuple[str, ...], where: str, column: str, problems: list[str]) -> int:
    if value == "":
        return -1
    if value not in names:
        problems.append(f"{where}: {column} {value!r} is not one of {', '.join(names)} (leave it empty when unknown)")
        return -1
    return names.index(value)


def _age(value: str, where: str, problems: list[str]) -> tuple[int, int]:
    """(age, band): whole years give the age; a range (`20-29`, `70-` = 70 or older, as `maskds
    import-faces` writes FairFace's) gives the competition band that holds it, or nothing when it spans two."""
    if value == "":
        return -1, -1
    age = parse_age(value)
    if age is None:
        problems.append(f"{where}: age {value!r} is not whole years in 0..120 or a range like 20-29 "
                        "(leave it empty when unknown)")
        return -1, -1
    if "-" not in age:
        return int(age), -1
    low, high = age.split("-")
    bands = {age_band(int(low)), age_band(int(high) if high else 120)}
    return -1, bands.pop() if len(bands) == 1 else -1


def _read_csv(folder: Path, problems: list[str]) -> pd.DataFrame | None:
    csv = folder / EXTRA_CSV
    if not folder.is_dir() or not csv.is_file():
        problems.append(f"{csv}: not found; an --extra folder holds {EXTRA_CSV} (columns image and any of "
                        f"{', '.join(COLUMNS[1:])}) and the images it names")
        return None
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        problems.append(f"{csv}: not a readable CSV ({err})")
        return None
    unknown = [c for c in df.columns if c not in COLUMNS]
    if "image" not in df.columns or unknown:
        problems.append(f"{csv}: columns must be image and any of {', '.join(COLUMNS[1:])}; got {list(df.columns)}")
        return None
    return df


def read_extra(folders: list[str | Path], need_label: bool = True) -> tuple[list[dict], list[str]]:
    """(cache rows of every --extra folder, problems): every problem found, each naming the file and line."""
    rows: list[dict] = []
    problems: list[str] = []
    for k, folder in enumerate(map(Path, folders)):
        df = _read_csv(folder, problems)
        if df is None:
            continue
        for line, rec in enumerate(df.to_dict("records"), start=2):
            where = f"{folder / EXTRA_CSV} line {line}"
            image = rec["image"].strip()
            if image and (Path(image).is_absolute() or ".." in Path(image).parts):
                problems.append(f"{where}: image {image!r} is not a path inside {folder}; name it relative to "
                                "the folder (no leading /, no ..)")
                continue
            if not image or not (folder / image).is_file():
                problems.append(f"{where}: image {image!r} not found under {folder}")
                continue
            mask = _label(rec.get("mask", "").strip(), MASK_NAMES, where, "mask", problems)
            gender = _label(rec.get("gender", "").strip(), GENDER_NAMES, where, "gender", problems)
            age, band = _age(rec.get("age", "").strip(), where, problems)
            if need_label and not any(rec.get(c, "").strip() for c in ("mask", "gender", "age")):
                problems.append(f"{where}: {image} has no label (mask, gender and age all empty); drop the row")
            framing = rec.get("framing", "").strip() or FRAMINGS[0]
            if framing not in FRAMINGS:
                problems.append(f"{where}: framing {framing!r} is not one of {', '.join(FRAMINGS)} (photo: a photo "
                                "to face-crop like the competition's; face: already a face crop)")
            person = rec.get("person", "").strip() or image
            rows.append({"framing": framing,
                         "person_id": f"extra{k}:{folder.name}:{person}", "mask": mask, "gender": gender, "race": "",
                         "age": age, "fold": -1, "image_name": image, "path": str((folder / image).resolve()),
                         "age_band": band, "origin": "extra"})
    if len(problems) > SHOW:
        problems = problems[:SHOW] + [f"... and {len(problems) - SHOW} more"]
    return rows, problems


def check_extra(folders: list[str | Path]) -> list[dict]:
    """The rows of the --extra folders, or a UserError listing every problem (nothing is written)."""
    rows, problems = read_extra(folders)
    if problems:
        raise UserError("the --extra data has problems; fix them and run again (nothing was written):", problems)
    return rows


def extra_fingerprint(folders: list[str | Path], rows: list[dict]) -> str:
    """Size and mtime of every extra image and labels.csv: a changed extra set means another cache."""
    h = hashlib.sha256()
    files = sorted({*(str(Path(f).resolve() / EXTRA_CSV) for f in folders), *(r["path"] for r in rows)})
    for f in files:
        st = Path(f).stat()
        h.update(f"{f}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
