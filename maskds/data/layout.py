"""Read and validate the competition's raw layout (train/ person folders, eval/info.csv), collecting every problem."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from maskds.core import labels
from maskds.core.errors import UserError

TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_COLUMNS = ("ImageID", "ans")
JUNK_NAMES = {"thumbs.db", "desktop.ini"}  # Windows junk, skipped like hidden files
FOLDER_RE = re.compile(r"^(?P<id>[^_]+)_(?P<gender>[^_]+)_(?P<race>.+)_(?P<age>[^_]+)$")
MIN_AGE, MAX_AGE = 0, 120


@dataclass(frozen=True)
class ImageRecord:
    """One train image with its person's labels. `path` is relative to DATA, with forward slashes."""
    person_id: str
    gender: int
    race: str
    age: int
    mask: int
    image_name: str
    path: str


@dataclass(frozen=True)
class EvalRecord:
    """One row of eval/info.csv: the image id and its path relative to DATA."""
    image_id: str
    path: str


@dataclass
class Layout:
    """What `scan` found: train records, eval records (None without eval/), the files read, and problems."""
    train: list[ImageRecord] = field(default_factory=list)
    eval: list[EvalRecord] | None = None
    files: list[str] = field(default_factory=list)  # csv files read, relative to DATA
    found: list[str] = field(default_factory=list)  # every image file found, even in broken folders
    problems: list[str] = field(default_factory=list)


def is_junk(name: str) -> bool:
    """Hidden files (incl. macOS `._*` and .DS_Store) and Windows junk that the layout ignores."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


def parse_folder_name(name: str) -> tuple[str, int, str, int]:
    """(person id, gender code, race, age) of a `<id>_<gender>_<race>_<age>` folder; ValueError if not."""
    m = FOLDER_RE.match(name)
    if not m:
        raise ValueError("does not match <id>_<gender>_<race>_<age> (e.g. 000001_female_Asian_45)")
    gender = m["gender"].lower()
    if gender not in labels.GENDER_CODES:
        raise ValueError(f"gender '{m['gender']}' is not male or female")
    if not m["age"].isdigit() or not MIN_AGE <= int(m["age"]) <= MAX_AGE:
        raise ValueError(f"age '{m['age']}' must be a whole number of years in {MIN_AGE}..{MAX_AGE}")
    return m["id"], labels.GENDER_CODES[gender], m["race"], int(m["age"])


def _read_csv(path: Path, columns: tuple[str, ...], problems: list[str]) -> list[dict[str, str]] | None:
    """Rows of a CSV that must hold `columns`; None (and a problem) if it is missing or unreadable."""
    if not path.is_file():
        problems.append(f"{path}: missing; it must exist with columns {','.join(columns)}")
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                problems.append(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                                f"{','.join(columns)}")
                return None
            return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problems.append(f"{path}: cannot be read as CSV ({err}); re-export it as UTF-8 CSV")
        return None


def _person_images(folder: Path, problems: list[str], found_out: list[Path]) -> dict[str, Path] | None:
    """The 7 images of a person folder by stem, tolerant of extensions and junk; None if any is wrong."""
    found: dict[str, list[Path]] = {}
    ok = True
    for f in sorted(folder.iterdir()):
        if is_junk(f.name):
            continue
        stem, ext = f.stem, f.suffix.lower()
        if not f.is_file() or ext not in labels.IMAGE_EXTENSIONS or stem not in labels.IMAGE_STEMS:
            problems.append(f"{f}: unexpected {'folder' if f.is_dir() else 'file'}; a person folder holds "
                            f"only {', '.join(labels.IMAGE_STEMS)} as .jpg/.jpeg/.png — move it out")
            ok = False
            continue
        found.setdefault(stem, []).append(f)
        found_out.append(f)
    for stem in labels.IMAGE_STEMS:
        files = found.get(stem, [])
        if not files:
            problems.append(f"{folder}: image '{stem}' is missing (.jpg, .jpeg or .png); add it or "
                            f"remove the person (folder and train.csv row)")
            ok = False
        elif len(files) > 1:
            problems.append(f"{folder}: '{stem}' exists {len(files)} times ({', '.join(p.name for p in files)}); "
                            f"keep one")
            ok = False
    return {stem: files[0] for stem, files in found.items()} if ok else None


def _check_row(row: dict[str, str], n: int, csv_path: Path, parsed, problems: list[str]) -> None:
    """Compare one train.csv row with the fields its folder name carries."""
    pid, gender, race, age = parsed
    # Leading zeros may be lost when a spreadsheet re-saves the CSV: compare numbers as numbers.
    got = {"id": row["id"].lstrip("0"), "gender": row["gender"].lower(), "race": row["race"],
           "age": row["age"].lstrip("0")}
    want = {"id": pid.lstrip("0"), "gender": labels.GENDER_NAMES[gender], "race": race, "age": str(age).lstrip("0")}
    for key in want:
        if got[key] != want[key]:
            problems.append(f"{csv_path} line {n}: {key} is '{row[key]}' but folder {row['path']} says "
                            f"'{want[key]}'; make the row and the folder name agree")


def scan_train(data: Path, out: Layout) -> None:
    """Fill `out.train` from DATA/train, appending every problem found to `out.problems`."""
    train = data / "train"
    csv_path, images = train / "train.csv", train / "images"
    if not images.is_dir():
        out.problems.append(f"{images}: missing; DATA must hold train/train.csv and train/images/<person folders>")
        return
    rows = _read_csv(csv_path, TRAIN_COLUMNS, out.problems)
    out.files.append("train/train.csv")
    by_path: dict[str, tuple[int, dict[str, str]]] = {}
    for n, row in enumerate(rows or [], start=2):  # line 1 is the header
        if row["path"] in by_path:
            out.problems.append(f"{csv_path} line {n}: path {row['path']} is listed twice "
                                f"(also line {by_path[row['path']][0]}); keep one row")
        by_path.setdefault(row["path"], (n, row))
    seen: set[str] = set()
    owners: dict[str, str] = {}  # person id -> folder name
    for folder in sorted(images.iterdir()):
        if is_junk(folder.name):
            continue
        if not folder.is_dir():
            out.problems.append(f"{folder}: unexpected file; train/images holds only person folders — move it out")
            continue
        try:
            parsed = parse_folder_name(folder.name)
        except ValueError as err:
            out.problems.append(f"{folder}: folder name {err}; rename it")
            continue
        seen.add(folder.name)
        if parsed[0] in owners:
            out.problems.append(f"{folder}: person id {parsed[0]} is also used by {owners[parsed[0]]}; "
                                f"give each person its own id")
            continue
        owners[parsed[0]] = folder.name
        if rows is not None:
            if folder.name not in by_path:
                out.problems.append(f"{folder}: not listed in {csv_path}; add a row with path "
                                    f"{folder.name} or remove the folder")
            else:
                _check_row(by_path[folder.name][1], by_path[folder.name][0], csv_path, parsed, out.problems)
        found: list[Path] = []
        imgs = _person_images(folder, out.problems, found)
        out.found += [f.relative_to(data).as_posix() for f in found]
        if imgs is None:
            continue
        pid, gender, race, age = parsed
        for stem, mask in labels.IMAGE_STEMS.items():
            rel = imgs[stem].relative_to(data).as_posix()
            out.train.append(ImageRecord(pid, gender, race, age, mask, stem, rel))
    for path, (n, _) in by_path.items():
        if path not in seen and not (images / path).is_dir():
            out.problems.append(f"{csv_path} line {n}: folder {images / path} does not exist; "
                                f"add the folder or remove the row")


def scan_eval(data: Path, out: Layout) -> None:
    """Fill `out.eval` from DATA/eval/info.csv (left None when DATA has no eval/ folder)."""
    ev = data / "eval"
    if not ev.exists():
        return
    info = ev / "info.csv"
    rows = _read_csv(info, EVAL_COLUMNS, out.problems)
    out.files.append("eval/info.csv")
    out.eval = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows or [], start=2):
        image_id = row["ImageID"]
        if image_id in seen:
            out.problems.append(f"{info} line {n}: ImageID {image_id} is listed twice (also line "
                                f"{seen[image_id]}); keep one row")
            continue
        seen[image_id] = n
        path = ev / "images" / image_id
        if not image_id or "/" in image_id or "\\" in image_id or not path.is_file():
            out.problems.append(f"{info} line {n}: image {path} does not exist; add it or fix the ImageID")
            continue
        out.eval.append(EvalRecord(image_id, path.relative_to(data).as_posix()))
        out.found.append(out.eval[-1].path)


def scan(data: str | Path) -> Layout:
    """Read DATA's train and eval parts without raising: problems are collected in the result."""
    data = Path(data)
    out = Layout()
    if not data.is_dir():
        out.problems.append(f"{data}: not a folder; DATA must hold train/ (and optionally eval/)")
        return out
    scan_train(data, out)
    scan_eval(data, out)
    return out


def raise_problems(data: str | Path, problems: list[str]) -> None:
    """Raise one UserError listing every problem (nothing happens when there are none)."""
    if problems:
        raise UserError(f"{len(problems)} problem(s) in the raw data at {data}; fix them and run again "
                        f"(nothing was written):", problems)


def read_train(data_root: str | Path) -> list[ImageRecord]:
    """Validated train records of DATA (7 per person, sorted by folder then image); UserError if bad."""
    out = Layout()
    scan_train(Path(data_root), out)
    raise_problems(data_root, out.problems)
    return out.train


def read_eval(data_root: str | Path) -> list[EvalRecord]:
    """Validated eval records in info.csv's order; UserError if DATA/eval is missing or bad."""
    out = Layout()
    scan_eval(Path(data_root), out)
    if out.eval is None:
        raise UserError(f"{Path(data_root) / 'eval'}: missing; it must hold info.csv and images/")
    raise_problems(data_root, out.problems)
    return out.eval
