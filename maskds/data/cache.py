"""`maskds build`: validated raw layout -> Hugging Face DatasetDict cache with per-person folds, built atomically."""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import datasets
from rich.console import Console
from rich.progress import Progress

from maskds.core.atomic import atomic_dir
from maskds.core.errors import UserError
from maskds.core.faces import CROP_METHODS, FACE_IMAGE, FIXED_BOX_RULE, MARGIN
from maskds.data.cache_meta import (
    FORMAT_VERSION,
    META_NAME,
    cache_crop,
    inputs_fingerprint,
    rebuild_command,
    reuse,
    stale_face_box,
)
from maskds.data.corrections import apply_corrections, load_corrections
from maskds.data.encode import imap_encode, progress_bar, undecodable
from maskds.data.extra import age_unused_note, check_extra, check_not_competition, extra_fingerprint
from maskds.data.folds import assign_folds, person_table
from maskds.data.layout import raise_problems, scan
from maskds.data.summary import counts, print_summary

TRAIN_ONLY_FOLD = -1  # the fold of rows that train every fold and never validate (extra data, pseudo labels)
TRAIN_FEATURES = datasets.Features({
    "image": datasets.Image(), "person_id": datasets.Value("string"), "mask": datasets.Value("int64"),
    "gender": datasets.Value("int64"), "race": datasets.Value("string"), "age": datasets.Value("int64"),
    "fold": datasets.Value("int64"), "image_name": datasets.Value("string"), "path": datasets.Value("string"),
})
# A cache with extra data (`--extra`) or pseudo labels has two more train columns: `age_band` (-1 but for a
# pseudo label, which knows the band and not the age) and `origin` (train | extra | pseudo).
PARTIAL_COLUMNS = {"age_band": datasets.Value("int64"), "origin": datasets.Value("string")}
# A cache built with --face-crop: every image's face box (fractions of the photo: the one found, or the
# fixed upper-centre box) and whether the detector found it.
FACE_COLUMNS = {"face_box": datasets.Sequence(datasets.Value("float32")), "face_found": datasets.Value("bool")}
EVAL_FEATURES = datasets.Features({
    "image": datasets.Image(), "image_id": datasets.Value("string"), "path": datasets.Value("string"),
})
console = Console(stderr=True)


def partial_features() -> datasets.Features:
    return datasets.Features({**TRAIN_FEATURES, **PARTIAL_COLUMNS})


def with_origin(train: datasets.Dataset) -> datasets.Dataset:
    """A train split with the partial-label columns (`age_band` -1, `origin` train) when it lacks them."""
    if "origin" in train.column_names:
        return train
    n = len(train)
    return (train.add_column("age_band", [-1] * n, feature=PARTIAL_COLUMNS["age_band"])
            .add_column("origin", ["train"] * n, feature=PARTIAL_COLUMNS["origin"]))


def _split(rows_meta: list[dict], tasks: list, features, num_proc: int, progress: Progress,
           label: str, work: Path, failures: list[str], fallbacks: list[str]) -> datasets.Dataset:
    """Encode every image on the worker pool and stream the rows into an arrow dataset under `work`;
    with a face crop, each row gets its box and the photos without a found face go into `fallbacks`."""
    def gen():
        for row, (task, (ok, value, face)) in zip(rows_meta, zip(tasks, imap_encode(tasks, num_proc, progress, label))):
            if not ok:
                failures.append(f"{task[0]}: cannot be decoded as an image ({value}); replace or remove it")
                continue
            if face is not None and "face_box" in features:
                row = {**row, "face_box": face[0], "face_found": face[1]}
                if not face[1]:
                    fallbacks.append(task[0])
            yield {"image": {"bytes": value, "path": None}, **row}
    # A fixed fingerprint: datasets would otherwise try to hash the generator and its closure.
    return datasets.Dataset.from_generator(gen, features=features, cache_dir=str(work / "gen"),
                                           fingerprint=f"maskds-{label}-{os.getpid()}")


def _row_crop(row: dict, crop: tuple[str, float] | None) -> tuple[str, float] | None:
    """What to cut from a row's image: the cache's face crop, or, for an `--extra` image marked `framing: face`
    (already a face crop), its centred window of the cache's shape (`core.faces.FACE_IMAGE`), with a face crop
    or without (a whole-photo cache resizes the photos, and a face stays undistorted)."""
    return (FACE_IMAGE, 0.0) if row.get("framing") == "face" else crop


def _write(data: Path, cache: Path, train_rows: list[dict], eval_rows: list[dict] | None,
           size_hw: tuple[int, int], num_proc: int, meta: dict, extra_rows: list[dict] = ()) -> float:
    """Build the DatasetDict beside CACHE under a temporary name, then rename it; returns seconds spent.
    With a face crop (`meta` args), the detection counts and the photos that fell back go into `meta`."""
    start = time.perf_counter()
    with no_datasets_bars(), atomic_dir(cache, "building", replace=True) as target:  # an old cache goes when whole
        _fill(target, data, train_rows, eval_rows, size_hw, num_proc, meta, extra_rows)
    return time.perf_counter() - start


@contextmanager
def no_datasets_bars() -> Iterator[None]:
    """datasets' own progress bars off inside the block (ours is the rich bar), as they were after it."""
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            datasets.enable_progress_bars()


def _fill(target: Path, data: Path, train_rows: list[dict], eval_rows: list[dict] | None,
          size_hw: tuple[int, int], num_proc: int, meta: dict, extra_rows: list[dict]) -> None:
    """Encode the rows and save the DatasetDict and its meta into the empty folder `target`; the generator's
    scratch files go beside it (`target.parent`, deleted with it by `atomic_dir`)."""
    work = target.parent
    failures: list[str] = []
    fallbacks: list[str] = []
    splits = {}
    if extra_rows:  # the partial-label columns, and the extra rows after the competition's
        train_rows = [{**r, "age_band": -1, "origin": "train"} for r in train_rows] + list(extra_rows)
    crop = cache_crop(meta)
    face = FACE_COLUMNS if crop else {}
    train_features = datasets.Features({**(partial_features() if extra_rows else TRAIN_FEATURES), **face})
    with progress_bar() as progress:
        for name, rows, features in (("train", train_rows, train_features),
                                     ("eval", eval_rows, datasets.Features({**EVAL_FEATURES, **face}))):
            if rows is None:
                continue
            tasks = [(str(data / r["path"]), tuple(size_hw), _row_crop(r, crop)) for r in rows]
            splits[name] = _split(rows, tasks, features, num_proc, progress, name, work, failures, fallbacks)
    raise_problems(data, failures)
    if crop:
        marked = sum(r.get("framing") == "face" for r in train_rows)  # already face crops: cut, not detected
        n = len(train_rows) + len(eval_rows or []) - marked
        fallbacks = fallbacks if crop[0] == "mtcnn" else []  # fixed: the box of every photo, nothing fell back
        meta["face_crop"] = {"method": crop[0], "margin": crop[1],
                             "found": n - len(fallbacks) if crop[0] == "mtcnn" else 0,
                             "fallback": len(fallbacks), "fallback_paths": fallbacks[:100],
                             "marked_faces": marked}
    datasets.DatasetDict(splits).save_to_disk(str(target))
    (target / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")


def _check_args(size_hw, folds: int, num_proc: int | None, face_crop: str = "none",
                face_margin: float = MARGIN) -> tuple[tuple[int, int], int]:
    if face_crop not in CROP_METHODS:
        raise UserError(f"--face-crop must be one of {', '.join(CROP_METHODS)}, got {face_crop!r}")
    if not 0 <= face_margin <= 2:
        raise UserError(f"--face-margin must be in [0, 2] (a fraction of the face box on each side), got {face_margin}")
    size = tuple(int(v) for v in size_hw)
    if len(size) != 2 or min(size) < 8:
        raise UserError(f"--size must be two numbers H W of at least 8 pixels, got {list(size_hw)}")
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if num_proc is not None and num_proc < 1:
        raise UserError(f"--num-proc must be at least 1, got {num_proc}")
    return size, num_proc or os.cpu_count() or 1


def build_cache(data: str | Path, cache: str | Path, size_hw=(384, 288), folds: int = 5, seed: int = 42,
                corrections: str | Path | None = "default", num_proc: int | None = None,
                force: bool = False, extra: list[str | Path] = (), face_crop: str = "none",
                face_margin: float = MARGIN) -> Path:
    """Validate DATA (and the `extra` folders: `data.extra`), apply corrections, assign folds and write
    CACHE atomically, faces cropped with `face_crop` (`core.faces`) (see ARCHITECTURE.md)."""
    data, cache = Path(data), Path(cache)
    size_hw, num_proc = _check_args(size_hw, folds, num_proc, face_crop, face_margin)
    corr = load_corrections(corrections)
    extra_rows = check_extra(extra) if extra else []
    layout = scan(data)
    if layout.problems:
        # Report every problem together: decode what was found too before giving up.
        raise_problems(data, layout.problems + undecodable(data, layout.found, num_proc))
    if extra_rows:
        check_not_competition(extra_rows, data, [r.path for r in layout.train])
        note = age_unused_note(extra_rows)
        if note:
            console.print(f"[yellow]warning:[/] {note}")
    args = {"size": list(size_hw), "folds": folds, "seed": seed, "corrections": corr.source}
    if face_crop != "none":
        args["face_crop"] = [face_crop, float(face_margin)]
        args["face_box_rule"] = FIXED_BOX_RULE  # mtcnn falls back to the fixed box
    fingerprint = inputs_fingerprint(data, layout, corr.sha256)
    if extra:
        args["extra"] = [str(Path(f).resolve()) for f in extra]
        fingerprint = hashlib.sha256(f"{fingerprint} {extra_fingerprint(extra, extra_rows)}".encode()).hexdigest()
    if reuse(cache, args, fingerprint, force, data):
        return cache
    records, applied, missing = apply_corrections(layout.train, corr)
    fold_of = assign_folds(person_table(records), folds, seed)
    if layout.eval is None:
        console.print(f"no eval/ folder in {data}: building the train split only")
    if missing and corr.source not in ("default", "none"):
        console.print(f"[yellow]warning:[/] {corr.source}: {len(missing)} person id(s) not in DATA, "
                      f"skipped: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    train_rows = [{"person_id": r.person_id, "mask": r.mask, "gender": r.gender, "race": r.race,
                   "age": r.age, "fold": fold_of[r.person_id], "image_name": r.image_name, "path": r.path}
                  for r in records]
    eval_rows = None if layout.eval is None else [{"image_id": e.image_id, "path": e.path} for e in layout.eval]
    meta = {"format_version": FORMAT_VERSION, "args": args,
            "corrections": {"source": corr.source, "sha256": corr.sha256, "applied": applied,
                            "not_found": missing},
            "inputs_fingerprint": fingerprint, "data": str(data.resolve()),
            "counts": {**counts(train_rows, eval_rows, folds), "extra_images": len(extra_rows),
                       "extra_age_unused": sum(bool(r["age_unused"]) for r in extra_rows)}}
    seconds = _write(data, cache, train_rows, eval_rows, size_hw, num_proc, meta, extra_rows)
    n = len(train_rows) + len(extra_rows) + len(eval_rows or [])
    print_summary(meta, Console())
    console.print(f"wrote {cache}: {n} images in {seconds:.1f} s ({n / seconds:.0f} images/s, "
                  f"{num_proc} process{'es' if num_proc > 1 else ''})")
    return cache


def load_cache(cache: str | Path) -> tuple[datasets.DatasetDict, dict]:
    """(DatasetDict with 'train' and maybe 'eval', meta dict); UserError for a missing or foreign cache."""
    cache = Path(cache)
    if not cache.exists():
        raise UserError(f"{cache}: no such cache; build it with `maskds build DATA {cache}`")
    meta_path = cache / META_NAME
    if not cache.is_dir() or not meta_path.is_file():
        raise UserError(f"{cache}: not a maskds cache (no {META_NAME}); build one with `maskds build DATA CACHE`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{meta_path}: unreadable ({err}); rebuild with `maskds build DATA {cache} --force`") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{cache}: cache format version {meta.get('format_version')!r}, this maskds reads "
                        f"version {FORMAT_VERSION}; rebuild it with `maskds build DATA {cache} --force`")
    stale = stale_face_box(meta.get("args", {}))
    if stale:
        source = meta.get("pseudo", {}).get("from_cache")  # a `maskds pseudo` copy: rebuild what it copied
        raise UserError(f"{cache}: {stale}; rebuild {'the cache it copies' if source else 'it'} with "
                        f"`{rebuild_command(meta.get('data', 'DATA'), source or cache, meta['args'])}`"
                        + (" and run `maskds pseudo` on it again" if source else ""))
    return datasets.load_from_disk(str(cache)), meta
