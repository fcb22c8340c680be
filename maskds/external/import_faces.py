"""`maskds import-faces SRC OUT`: a face set from elsewhere (UTKFace, AFAD, FairFace, your CSV) to an
`--extra`-ready folder: each face framed as a chest-up photo (or kept as a face crop, marked so), optionally as the competition's seven photos
with masks drawn on, `labels.csv` with mask, gender, age and person. Written atomically: all or nothing."""
from __future__ import annotations

import csv
import os
import signal
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from maskds.core import images
from maskds.core.ages import AgeLabel
from maskds.core.atomic import atomic_dir, atomic_path
from maskds.core.errors import UserError, shown
from maskds.core.labels import MASK_NAMES
from maskds.data.encode import progress_bar
from maskds.data.extra import EXTRA_CSV
from maskds.external.draw_masks import PHOTOS, frame_portrait, person_photos
from maskds.external.face_sources import CsvColumns, FaceRecord, read_source

FRAMES = ("portrait", "crop", "none")
MASK_STATES = ("not_wear", "unknown")
SHOW = 20  # problems listed before "... and N more"
console = Console(stderr=True)


@dataclass(frozen=True)
class ImportOptions:
    """What to make of each face: `frame` (portrait: placed as a 384x512 chest-up photo; crop: the face crop as
    it is, its rows marked `framing: face` so that `maskds build` only fits it to the cache's shape; none: the
    photo as it is, cropped by the cache like a competition photo),
    `draw_masks` (seven photos with masks drawn on, else the face alone), the mask state of an undrawn face
    (`not_wear`, or `unknown` for photos that may show masks), the run's seed."""
    frame: str = "portrait"
    draw_masks: bool = False
    mask_state: str = "not_wear"
    seed: int = 0


def _process(task: tuple[int, FaceRecord, ImportOptions, str]) -> tuple[int, list[tuple[str, str]] | None, str]:
    """One face -> (index, [(image file, mask state)] written under `folder`, or None, and why not)."""
    k, rec, opt, folder = task
    try:
        face = images.open_rgb(rec.path)
    except Exception as err:  # any decoder failure is a bad input file
        return k, None, f"{rec.path}: cannot be decoded as an image ({type(err).__name__}: {err}); replace or remove it"
    rng = np.random.default_rng([opt.seed, k])
    if opt.draw_masks:
        from maskds.core.faces import landmarks

        points = landmarks(face)
        if points is None:
            return k, None, "no landmarks"
        photos, centre = person_photos(face, points, rng), points.mean(0)
    else:
        photos, centre = {"normal": face}, None
    written = []
    for stem, img in photos.items():
        img = frame_portrait(img, rng, centre) if opt.frame == "portrait" else img
        name = f"images/{k:06d}_{stem}.jpg"
        img.save(Path(folder) / name, quality=92)
        state = MASK_NAMES[PHOTOS[stem][1]] if opt.draw_masks else opt.mask_state
        written.append((name, "" if state == "unknown" else state))
    return k, written, ""


def _run_pool(tasks: list, num_proc: int):
    if num_proc <= 1 or len(tasks) < 2:
        yield from map(_process, tasks)
        return
    # Ctrl-C is handled once, by the main process, which then terminates the pool.
    ignore_sigint = (signal.SIGINT, signal.SIG_IGN)
    with get_context("fork").Pool(num_proc, initializer=signal.signal, initargs=ignore_sigint) as pool:
        yield from pool.imap_unordered(_process, tasks, chunksize=4)


def _select(faces: list[FaceRecord], min_age: int, limit: int | None, seed: int) -> list[FaceRecord]:
    """Faces at least `min_age` years old (by the low end of a range; an unknown age stays), then `limit` of
    them drawn at random."""
    faces = [f for f in faces if not f.age or AgeLabel.parse(f.age).low >= min_age]
    if limit is not None and limit < len(faces):
        pick = np.random.default_rng(seed).choice(len(faces), size=limit, replace=False)
        faces = [faces[i] for i in sorted(pick)]
    return faces


def _check_preview(png: Path) -> None:
    """--preview is checked before the import runs, not after minutes of it."""
    if png.suffix.lower() != ".png":
        raise UserError(f"--preview {png}: name a .png file")
    if png.is_dir():
        raise UserError(f"--preview {png}: is a folder; name a .png file")
    parent = png.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--preview {png}: cannot write under {parent}; choose a writable place")


def _check(src: Path, out: Path, opt: ImportOptions, min_age: int, limit: int | None) -> None:
    if opt.frame not in FRAMES:
        raise UserError(f"--frame must be one of {', '.join(FRAMES)}, got {opt.frame!r}")
    if opt.mask_state not in MASK_STATES:
        raise UserError(f"--mask-state must be one of {', '.join(MASK_STATES)}, got {opt.mask_state!r}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if not 0 <= min_age <= 120:
        raise UserError(f"--min-age must be in 0..120, got {min_age}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not empty; choose another OUT or remove it yourself")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise UserError(f"{out}: inside the source {src}; write the import elsewhere")


def import_faces(src: str | Path, out: str | Path, fmt: str, cols: CsvColumns | None = None,
                 opt: ImportOptions = ImportOptions(), min_age: int = 0, limit: int | None = None,
                 num_proc: int | None = None, preview: str | Path | None = None) -> Path:
    """Read SRC in format `fmt` (every problem reported at once, nothing written), then write OUT/labels.csv
    and OUT/images/ (see ImportOptions); faces without landmarks (with draw_masks) are skipped and listed
    in OUT/skipped.txt. Returns OUT."""
    src, out = Path(src), Path(out)
    _check(src, out, opt, min_age, limit)
    if preview is not None:
        _check_preview(Path(preview))
    problems: list[str] = []
    faces = read_source(src, fmt, cols or CsvColumns(), problems)
    if problems:
        raise UserError(f"{src}: the source has problems; fix them and run again (nothing was written):",
                        shown(problems, SHOW))
    faces = _select(faces, min_age, limit, opt.seed)
    if not faces:
        raise UserError(f"{src}: no face is at least --min-age {min_age} years old; nothing was written")
    if limit is not None and len(faces) < limit:  # the user asked for more: say so rather than import less silently
        aged = f" at least --min-age {min_age} years old" if min_age else ""
        console.print(f"[yellow]warning:[/] {src} holds {len(faces)} faces{aged}, fewer than --limit {limit}; "
                      f"importing all {len(faces)}")
    with atomic_dir(out, "importing") as work:
        (work / "images").mkdir()
        rows, skipped = _write_all(faces, opt, work, num_proc or os.cpu_count() or 1, problems)
        if problems:
            raise UserError(f"{src}: images that cannot be read; fix them and run again (nothing was written):",
                            shown(problems, SHOW))
        if not rows:
            raise UserError(f"{src}: no face had landmarks to draw masks on; nothing was written")
        _write_labels(work / EXTRA_CSV, rows, face_crops=opt.frame == "crop")
        if skipped:
            (work / "skipped.txt").write_text("".join(f"{p}\n" for p in skipped))
        if out.exists():
            out.rmdir()  # checked empty above
    persons = len({r[4] for r in rows})
    note = f"; {len(skipped)} faces without landmarks skipped (listed in {out / 'skipped.txt'})" if skipped else ""
    console.print(f"wrote {out}: {persons} persons, {len(rows)} images{note}")
    if preview is not None:
        write_preview(out, Path(preview))
    return out


def _write_all(faces: list[FaceRecord], opt: ImportOptions, work: Path, num_proc: int,
               problems: list[str]) -> tuple[list[tuple], list[str]]:
    """Every face through `_process` on a pool; (labels rows in face order, skipped face paths)."""
    tasks = [(k, f, opt, str(work)) for k, f in enumerate(faces)]
    done: dict[int, list] = {}
    skipped = []
    with progress_bar() as progress:
        bar = progress.add_task("faces", total=len(tasks))
        for k, written, why in _run_pool(tasks, num_proc):
            progress.advance(bar)
            if written is not None:
                done[k] = written
            elif why == "no landmarks":
                skipped.append(str(faces[k].path))
            else:
                problems.append(why)
    rows = []
    for k in sorted(done):
        f = faces[k]
        gender = ("male", "female", "")[f.gender]  # -1: unknown
        rows += [(name, state, gender, f.age, f"{k:06d}") for name, state in done[k]]
    return rows, sorted(skipped)


def _write_labels(path: Path, rows: list[tuple], face_crops: bool = False) -> None:
    """labels.csv; with `face_crops` (`--frame crop`) each row is marked `framing: face` (`data.extra`)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "gender", "age", "person"] + (["framing"] if face_crops else []))
        w.writerows([(*r, "face") for r in rows] if face_crops else rows)


def write_preview(folder: Path, png: Path, persons: int = 6, thumb: tuple[int, int] = (96, 128)) -> Path:
    """A grid to look at: `persons` persons spread over the import, one row of (up to seven) photos each,
    or, where every person has one photo, four times as many in rows of eight; each with its labels."""
    import pandas as pd
    from PIL import ImageDraw

    df = pd.read_csv(folder / EXTRA_CSV, dtype=str, keep_default_na=False)
    ids = list(dict.fromkeys(df.person))
    per = int(df.person.value_counts().max())
    n = persons if per > 1 else 4 * persons
    chosen = [ids[int(i)] for i in np.unique(np.linspace(0, len(ids) - 1, min(n, len(ids))).round())]
    cells = [df[df.person == p].to_dict("records") for p in chosen]
    if per == 1:
        flat = [c[0] for c in cells]
        cells = [flat[i:i + 8] for i in range(0, len(flat), 8)]
    cols = max(len(c) for c in cells)
    grid = Image.new("RGB", (cols * thumb[0], len(cells) * (thumb[1] + 14)), "white")
    d = ImageDraw.Draw(grid)
    for r, row in enumerate(cells):
        for c, rec in enumerate(row):
            x, y = c * thumb[0], r * (thumb[1] + 14)
            grid.paste(images.open_rgb(folder / rec["image"]).resize(thumb), (x, y))
            d.text((x + 2, y + thumb[1]), f"{rec['mask'] or '?'} {rec['gender'][:1]} {rec['age']}", fill="black")
    with atomic_path(png, suffix=".png") as tmp:
        grid.save(tmp)
    console.print(f"preview: {png}")
    return png
