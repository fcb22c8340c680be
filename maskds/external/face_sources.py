"""`maskds import-faces` sources: the face sets teams add (UTKFace, AFAD, FairFace, a CSV of your own) read
into records of (image, age, gender), every problem collected with its file and line."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from maskds.core.ages import parse_age
from maskds.core.labels import IMAGE_EXTENSIONS

FORMATS = ("utkface", "afad", "fairface", "csv", "folder")


@dataclass(frozen=True)
class FaceRecord:
    """One face: its image, its age as recorded ("34", or an interval "20-29" / "70-" = 70 or older; "" unknown)
    and gender (0 male, 1 female, -1 unknown); `person` groups photos of one person (the file name when unknown)."""
    path: Path
    age: str
    gender: int
    person: str


@dataclass
class CsvColumns:
    """How to read a CSV source (`--format csv` / `fairface`): column names and the gender values."""
    labels: Path | None = None
    image: str = "image"
    age: str = "age"
    gender: str = "gender"
    male: list[str] = field(default_factory=lambda: ["male", "m", "0"])
    female: list[str] = field(default_factory=lambda: ["female", "f", "1"])


def list_images(src: Path) -> list[Path]:
    """Every image under SRC (hidden files and macOS `._` junk left out), in a stable order."""
    return sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(src).parts))


def read_utkface(src: Path, problems: list[str]) -> list[FaceRecord]:
    """`[age]_[gender]_[race]_[date&time].jpg.chip.jpg`, gender 0 male / 1 female; a name missing a later
    field (race, date) is still read when its age and gender are there."""
    out = []
    for p in list_images(src):
        fields = p.name.split("_")
        age = parse_age(fields[0]) if len(fields) >= 2 and fields[0].isdigit() else None
        gender = fields[1].split(".")[0] if len(fields) >= 2 else ""
        if age is None or gender not in ("0", "1"):
            problems.append(f"{p}: not a UTKFace name [age]_[gender]_[race]_[date].jpg (age 0..120, gender 0 or 1)")
            continue
        out.append(FaceRecord(p, age, int(gender), p.name))
    return out


def read_afad(src: Path, problems: list[str]) -> list[FaceRecord]:
    """`<age>/<111|112>/<name>.jpg`: 111 male, 112 female."""
    out = []
    for p in list_images(src):
        parts = p.relative_to(src).parts
        if len(parts) != 3 or parse_age(parts[0]) is None or not parts[0].isdigit() or parts[1] not in ("111", "112"):
            problems.append(f"{p}: not in AFAD's <age>/<111|112>/<name>.jpg layout (111 male, 112 female)")
            continue
        out.append(FaceRecord(p, parse_age(parts[0]), 0 if parts[1] == "111" else 1, "/".join(parts)))
    return out


def _labels_file(src: Path, cols: CsvColumns, problems: list[str]) -> Path | None:
    if cols.labels is not None:
        path = cols.labels if cols.labels.is_absolute() or cols.labels.is_file() else src / cols.labels
        if not path.is_file():
            problems.append(f"{cols.labels}: labels CSV not found (--labels)")
            return None
        return path
    found = sorted(src.glob("*.csv"))
    if len(found) != 1:
        problems.append(f"{src}: {len(found)} CSV files at the top level; name the labels file with --labels FILE")
        return None
    return found[0]


def gender_overlap(cols: CsvColumns) -> str | None:
    """Why `cols`' male and female values cannot be told apart (a value in both, any case), or None."""
    shared = sorted({v.lower() for v in cols.male} & {v.lower() for v in cols.female})
    if not shared:
        return None
    default = CsvColumns()
    sets = [f"{'the default ' if values == getattr(default, key) else ''}--{key} {' '.join(values)}"
            for key, values in (("male", cols.male), ("female", cols.female))]
    return (f"{sets[0]} and {sets[1]} share {', '.join(map(repr, shared))}: a value can mean one gender only; "
            "give both --male and --female without it (a set given replaces its own default only)")


def read_csv_source(src: Path, cols: CsvColumns, problems: list[str]) -> list[FaceRecord]:
    """A CSV naming each image (a path under SRC or the CSV's folder), its age and gender; male and female
    values that overlap are a problem (no row is read then)."""
    overlap = gender_overlap(cols)
    if overlap:  # a shared value would silently become male
        problems.append(overlap)
        return []
    path = _labels_file(src, cols, problems)
    if path is None:
        return []
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        problems.append(f"{path}: not a readable CSV ({err})")
        return []
    missing = [c for c in (cols.image, cols.age, cols.gender) if c not in df.columns]
    if missing:
        problems.append(f"{path}: no column {', '.join(map(repr, missing))} (columns: {list(df.columns)}); "
                        "name them with --image-col / --age-col / --gender-col")
        return []
    male, female = {v.lower() for v in cols.male}, {v.lower() for v in cols.female}
    out = []
    for line, rec in enumerate(df.to_dict("records"), start=2):
        where = f"{path} line {line}"
        name = rec[cols.image].strip()
        image = next((b / name for b in (src, path.parent) if name and (b / name).is_file()), None)
        age = parse_age(rec[cols.age])
        g = rec[cols.gender].strip().lower()
        if image is None:
            problems.append(f"{where}: image {name!r} not found under {src}")
        if age is None:
            problems.append(f"{where}: age {rec[cols.age]!r} is not whole years (0..120) or a range like 20-29")
        if g not in male | female:
            problems.append(f"{where}: gender {rec[cols.gender]!r} is neither male ({', '.join(sorted(male))}) nor "
                            f"female ({', '.join(sorted(female))}); say which with --male / --female")
        if image is not None and age is not None and g in male | female:
            out.append(FaceRecord(image, age, 0 if g in male else 1, name))
    return out


def read_source(src: Path, fmt: str, cols: CsvColumns, problems: list[str]) -> list[FaceRecord]:
    """The faces of SRC in format `fmt`; problems (file and line) go into `problems`."""
    if fmt not in FORMATS:
        problems.append(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
        return []
    if not src.is_dir():
        problems.append(f"{src}: not a folder")
        return []
    if fmt == "folder":  # faces without labels: `maskds pseudo --faces` guesses them
        faces = [FaceRecord(p, "", -1, str(p.relative_to(src))) for p in list_images(src)]
    elif fmt == "utkface":
        faces = read_utkface(src, problems)
    elif fmt == "afad":
        faces = read_afad(src, problems)
    else:
        if fmt == "fairface":  # its own CSV: file,age,gender,race,... with Male/Female
            cols = CsvColumns(cols.labels, "file", "age", "gender", ["male"], ["female"])
        faces = read_csv_source(src, cols, problems)
    if not faces and not problems:
        problems.append(f"{src}: no faces found for --format {fmt}")
    return faces
