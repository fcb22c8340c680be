"""Label corrections (person id -> real gender/age or swapped images), applied before folds are drawn.

File format (YAML mapping, ids quoted so leading zeros survive):
    "004432": {gender: female}
    "000020": {swap: [incorrect_mask, normal]}
    "000123": {age: 45}
Ids that are not in DATA are skipped and reported as a warning, not an error: one file can serve
several copies or subsets of the data (the default file names real-data ids absent from synthetic data).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from maskds.core import labels
from maskds.core.errors import UserError
from maskds.data.layout import MAX_AGE, MIN_AGE, ImageRecord

DEFAULT_PATH = Path(__file__).parent / "corrections.yaml"
FIELDS = ("gender", "age", "swap")


@dataclass(frozen=True)
class Corrections:
    """Parsed corrections: where they came from, the file's sha256, and person id -> fixes."""
    source: str  # "default", "none" or the file's absolute path
    sha256: str | None = None
    entries: dict[str, dict] = field(default_factory=dict)


def _entry(path: Path, key, value) -> dict:
    """Validate one person's corrections; UserError naming the file and key if malformed."""
    where = f"{path}: key {key!r}"
    if not isinstance(key, str):
        raise UserError(f"{where}: person ids must be quoted strings (e.g. \"004432\"); YAML read it as "
                        f"{type(key).__name__}, which loses leading zeros — quote it")
    if not isinstance(value, dict) or not value:
        raise UserError(f"{where}: expected a mapping with one or more of {', '.join(FIELDS)}, "
                        f"e.g. {{gender: female}}")
    fixes = {}
    for name, v in value.items():
        if name == "gender":
            if str(v).lower() not in labels.GENDER_CODES:
                raise UserError(f"{where}: gender must be male or female, got {v!r}")
            fixes["gender"] = labels.GENDER_CODES[str(v).lower()]
        elif name == "age":
            if isinstance(v, bool) or not isinstance(v, int) or not MIN_AGE <= v <= MAX_AGE:
                raise UserError(f"{where}: age must be a whole number of years, got {v!r}")
            fixes["age"] = v
        elif name == "swap":
            if (not isinstance(v, list) or len(v) != 2 or v[0] == v[1]
                    or any(s not in labels.IMAGE_STEMS for s in v)):
                raise UserError(f"{where}: swap must list two different image names from "
                                f"{', '.join(labels.IMAGE_STEMS)}, e.g. [incorrect_mask, normal]; got {v!r}")
            fixes["swap"] = (v[0], v[1])
        else:
            raise UserError(f"{where}: unknown field {name!r}; use {', '.join(FIELDS)}")
    return fixes


def parse_file(path: str | Path, source: str | None = None) -> Corrections:
    """Read and validate a corrections YAML file; UserError naming the file (and key) if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: corrections file not found; pass an existing YAML file, 'default' or 'none'")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid YAML ({err}); fix the file") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of person id -> corrections, got {type(data).__name__}")
    entries = {key: _entry(path, key, value) for key, value in data.items()}
    return Corrections(source or str(path.resolve()), hashlib.sha256(raw).hexdigest(), entries)


def load_corrections(spec: str | Path | None) -> Corrections:
    """'default' (the shipped file of documented errors), 'none', or a path to a YAML file."""
    if spec is None or str(spec) == "none":
        return Corrections("none")
    if str(spec) == "default":
        return parse_file(DEFAULT_PATH, source="default")
    return parse_file(spec)


def apply_corrections(records: list[ImageRecord], corr: Corrections
                      ) -> tuple[list[ImageRecord], list[dict], list[str]]:
    """Corrected records, the changes made (one dict per changed label) and the ids not found in DATA."""
    by_person: dict[str, dict[str, ImageRecord]] = {}
    for r in records:
        by_person.setdefault(r.person_id, {})[r.image_name] = r
    applied: list[dict] = []
    fixed: dict[str, dict[str, ImageRecord]] = {}
    for pid, fixes in corr.entries.items():
        if pid not in by_person:
            continue
        imgs = dict(by_person[pid])
        first = next(iter(imgs.values()))
        for name in ("gender", "age"):
            if name in fixes and getattr(first, name) != fixes[name]:
                old = getattr(first, name)
                imgs = {k: dataclasses.replace(r, **{name: fixes[name]}) for k, r in imgs.items()}
                show = (lambda g: labels.GENDER_NAMES[g]) if name == "gender" else (lambda a: a)
                applied.append({"person_id": pid, "field": name, "from": show(old), "to": show(fixes[name])})
        if "swap" in fixes:
            a, b = fixes["swap"]
            ma, mb = imgs[a].mask, imgs[b].mask
            if ma != mb:
                imgs[a], imgs[b] = dataclasses.replace(imgs[a], mask=mb), dataclasses.replace(imgs[b], mask=ma)
                applied.append({"person_id": pid, "field": "swap", "images": [a, b]})
        fixed[pid] = imgs
    out = [fixed[r.person_id][r.image_name] if r.person_id in fixed else r for r in records]
    missing = [pid for pid in corr.entries if pid not in by_person]
    return out, applied, missing
