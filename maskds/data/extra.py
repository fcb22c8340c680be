"""`maskds build --extra DIR`: images from elsewhere with whatever labels they have.

DIR holds the images and `labels.csv`, one row per image:

    image,mask,gender,age,person
    faces/0001.jpg,,female,34,p17        # no mask label
    masks/a.png,wear,,,                  # a mask state and nothing else

`image` (a path under DIR) is required; `mask` (wear | incorrect | not_wear), `gender` (male |
female), `age` (whole years, or a range such as `20-29` or `70-`, learned as the competition's age band
that holds it; a range across two bands, such as Adience's `25-32`, is not used: the build counts and names
those rows, and refuses one with no other label), `person` (groups images of one person) and `framing`
(`photo`, the default: a photo like the competition's, face-cropped as the cache is; `face`: already an
aligned face crop, which a cache only cuts to its height:width shape and resizes, as `maskds import-faces
--frame crop` marks its rows) are optional columns, and an empty cell is a missing label. Each image is a
file inside DIR (links followed), listed once across all --extra folders (by the file, so a hard link
counts as the same image), and not a competition training photo (the same bytes); the
build refuses any other, naming the lines or paths. The rows go into the cache's train split in fold -1
(`TRAIN_ONLY_FOLD`: every fold trains on them, none validates on them), missing labels as -1, marked
`origin: extra`; the loss leaves out the heads a row has no label for.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pandas as pd

from maskds.core.ages import AgeLabel
from maskds.core.errors import UserError, shown
from maskds.core.labels import GENDER_NAMES, MASK_NAMES

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


def _age(value: str, where: str, problems: list[str]) -> tuple[int, int, str]:
    """(age, band, spans): whole years give the age; a range (`20-29`, `70-` = 70 or older, as `maskds
    import-faces` writes FairFace's) gives the competition band that holds it; a range across two bands
    (Adience's `25-32`) gives neither, and `spans` names the bands (the build counts and reports the row).
    A range is not learned as its own interval: the cache keeps a band, not the range's years."""
    if value == "":
        return -1, -1, ""
    age = AgeLabel.parse(value)
    if age is None:
        problems.append(f"{where}: age {value!r} is not whole years in 0..120 or a range like 20-29 "
                        "(leave it empty when unknown)")
        return -1, -1, ""
    if age.years is not None:
        return age.years, -1, ""
    return -1, age.band(), age.spanned()


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


def _image(folder: Path, image: str, where: str, problems: list[str]) -> Path | None:
    """The resolved path of a row's image, or None (a problem said): it must be a file inside the folder,
    also once links are followed (`pseudo --faces` copies these paths, the cache reads them)."""
    if image and (Path(image).is_absolute() or ".." in Path(image).parts):
        problems.append(f"{where}: image {image!r} is not a path inside {folder}; name it relative to "
                        "the folder (no leading /, no ..)")
        return None
    if not image or not (folder / image).is_file():
        problems.append(f"{where}: image {image!r} not found under {folder}")
        return None
    path = (folder / image).resolve()
    if not path.is_relative_to(folder.resolve()):
        problems.append(f"{where}: image {image!r} leaves {folder}: it resolves to {path} (a link to outside "
                        "the folder); copy the image into the folder instead")
        return None
    return path


def _row(rec: dict, k: int, folder: Path, image: str, path: Path, where: str, need_label: bool,
         problems: list[str]) -> dict:
    """The cache row of one labels.csv record (its problems into `problems`)."""
    mask = _label(rec.get("mask", "").strip(), MASK_NAMES, where, "mask", problems)
    gender = _label(rec.get("gender", "").strip(), GENDER_NAMES, where, "gender", problems)
    value = rec.get("age", "").strip()
    age, band, spans = _age(value, where, problems)
    if need_label and not any(rec.get(c, "").strip() for c in ("mask", "gender", "age")):
        problems.append(f"{where}: {image} has no label (mask, gender and age all empty); drop the row")
    elif need_label and spans and mask < 0 and gender < 0:
        problems.append(f"{where}: {image}'s only label, age {value!r}, spans two age bands ({spans}), which no "
                        "head learns; drop the row, or give it a mask or gender label")
    framing = rec.get("framing", "").strip() or FRAMINGS[0]
    if framing not in FRAMINGS:
        problems.append(f"{where}: framing {framing!r} is not one of {', '.join(FRAMINGS)} (photo: a photo "
                        "to face-crop like the competition's; face: already a face crop)")
    person = rec.get("person", "").strip() or image
    return {"framing": framing, "person_id": f"extra{k}:{folder.name}:{person}", "mask": mask, "gender": gender,
            "race": "", "age": age, "fold": -1, "image_name": image, "path": str(path), "age_band": band,
            "origin": "extra", "where": where, "age_unused": f"age {value} spans {spans}" if spans else ""}


def read_extra(folders: list[str | Path], need_label: bool = True) -> tuple[list[dict], list[str]]:
    """(cache rows of every --extra folder, problems): every problem found, each naming the file and line.
    An image is listed once across all the folders: a second row naming the same file (the same folder given
    twice, a link, or `pseudo --faces` OUT's hard links beside its source) is a problem, with other labels or
    the same ones (not deduplicated: which labels are right, or whether a doubled weight was meant, is the
    user's to say). Two files with equal bytes are two images (the user may mean both)."""
    rows: list[dict] = []
    problems: list[str] = []
    # the file itself (device, inode), not its path: a hard link has its own path but trains the same pixels
    seen: dict[tuple[int, int], tuple[str, tuple]] = {}  # file -> (its first row's file and line, its labels)
    for k, folder in enumerate(map(Path, folders)):
        df = _read_csv(folder, problems)
        if df is None:
            continue
        for line, rec in enumerate(df.to_dict("records"), start=2):
            where = f"{folder / EXTRA_CSV} line {line}"
            image = rec["image"].strip()
            path = _image(folder, image, where, problems)
            if path is None:
                continue
            labels = tuple(rec.get(c, "").strip() for c in COLUMNS[1:])
            row = _row(rec, k, folder, image, path, where, need_label, problems)  # its own problems too
            st = path.stat()
            if (st.st_dev, st.st_ino) in seen:
                first, before = seen[st.st_dev, st.st_ino]
                problems.append(f"{where}: image {image!r} is the image of {first} again"
                                + (" with other labels" if labels != before else "")
                                + "; list each image once (remove one of the two rows)")
                continue
            seen[st.st_dev, st.st_ino] = (where, labels)
            rows.append(row)
    return rows, shown(problems, SHOW)


def check_extra(folders: list[str | Path]) -> list[dict]:
    """The rows of the --extra folders, or a UserError listing every problem (nothing is written)."""
    rows, problems = read_extra(folders)
    if problems:
        raise UserError("the --extra data has problems; fix them and run again (nothing was written):", problems)
    return rows


def check_not_competition(rows: list[dict], data: Path, train_paths: list[str]) -> None:
    """UserError naming both paths for each extra image whose bytes are a competition training photo's: it
    would train that person in every fold, the fold that validates them included. Only files of equal size
    are hashed, so a build reads few images."""
    by_size: dict[int, list[Path]] = {}
    for rel in train_paths:
        by_size.setdefault((data / rel).stat().st_size, []).append(data / rel)
    digest = functools.cache(lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest())
    problems = []
    for row in rows:
        same = (p for p in by_size.get(Path(row["path"]).stat().st_size, []) if digest(p) == digest(row["path"]))
        photo = next(same, None)
        if photo is not None:
            problems.append(f"{row['where']}: {row['path']} is the competition's training photo {photo} "
                            "(the same bytes); remove it from the --extra folder")
    if problems:
        raise UserError("--extra images that are competition training photos would train their persons in every "
                        "fold, validation's included (nothing was written):", shown(problems, SHOW))


def age_unused_note(rows: list[dict]) -> str | None:
    """The warning for the extra rows whose age is a range across two bands (their other labels are kept)."""
    unused = [r for r in rows if r["age_unused"]]
    if not unused:
        return None
    shown = ", ".join(f"{r['where']} ({r['age_unused']})" for r in unused[:5])
    return (f"{len(unused)} --extra row(s) give an age range across two age bands; their age is not used (an age "
            f"range is learned as the one band holding it); their other labels are used. The rows: {shown}"
            + (f" and {len(unused) - 5} more" if len(unused) > 5 else ""))


def extra_fingerprint(folders: list[str | Path], rows: list[dict]) -> str:
    """Size and mtime of every extra image and labels.csv: a changed extra set means another cache."""
    h = hashlib.sha256()
    files = sorted({*(str(Path(f).resolve() / EXTRA_CSV) for f in folders), *(r["path"] for r in rows)})
    for f in files:
        st = Path(f).stat()
        h.update(f"{f}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
