"""Synthetic data in the competition's raw layout: drawn faces with learnable mask, gender and age cues."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from maskds.core import labels
from maskds.core.errors import UserError
from maskds.synth.portrait import draw_person_image, random_look

STEMS = tuple(labels.IMAGE_STEMS)  # mask1..mask5, incorrect_mask, normal
# Persons per age band like the real data: >= 60 is the rarest band, < 30 the largest.
BAND_P = (0.50, 0.38, 0.12)
FEMALE_P = 0.6
OTHER_RACES = ("White", "Black", "Hispanic")
QUIRK_RATE = 0.02  # extra quirks beyond the one forced instance of each
JUNK_BYTES = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)  # AppleDouble-like junk


@dataclass(frozen=True)
class Job:
    """One synthetic person to draw: where its images go and how they are written."""
    seed: tuple[int, ...]
    gender: int
    age: int
    files: tuple[tuple[str, str], ...]  # (stem, path relative to OUT) for the 7 images
    exif_stem: str | None = None  # image stored rotated with an EXIF Orientation tag
    junk: bool = False  # add a macOS `._mask1.jpg` beside the images


def _band_ages(rng: np.random.Generator, n: int) -> list[int]:
    """Ages 18..60 with everyone >= 60 recorded as 60 (the default bands: <30, 30..59, 60)."""
    bands = rng.choice(3, size=n, p=BAND_P)
    lows, highs = (18, 30, 60), (29, 59, 60)
    return [int(rng.integers(lows[b], highs[b] + 1)) for b in bands]


def _forced(rng: np.random.Generator, n: int, min_n: int = 10) -> set[int]:
    """Indices carrying a quirk: a low rate, and always at least one when n >= min_n."""
    picked = {i for i in range(n) if rng.random() < QUIRK_RATE}
    if n >= min_n and not picked:
        picked.add(int(rng.integers(n)))
    return picked


def _encode(img: Image.Image, ext: str, quality: int, orientation: int | None) -> bytes:
    """Encode as JPEG or PNG; with `orientation`, store pixels rotated and tag them so readers undo it."""
    buf = io.BytesIO()
    if ext == ".png":
        img.save(buf, format="PNG")
        return buf.getvalue()
    if orientation == 6:
        # Orientation 6 = "rotate 90 clockwise to display": store the picture turned counter-clockwise.
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _draw_job(args: tuple[Path, Job]) -> None:
    """Draw and write one person's 7 images (run in a worker; everything comes from the job's seed)."""
    out, job = args
    rng = np.random.default_rng(list(job.seed))
    look = random_look(rng, job.gender, labels.age_band(job.age))
    wear_styles = rng.permutation(look.n_styles)[:5]
    for i, (stem, rel) in enumerate(job.files):
        mask_state = labels.IMAGE_STEMS[stem]
        style = int(wear_styles[i]) if mask_state == 0 else int(rng.integers(look.n_styles))
        img = draw_person_image(rng, look, mask_state, style)
        ext = os.path.splitext(rel)[1]
        quality = int(rng.integers(88, 96))
        data = _encode(img, ext, quality, 6 if stem == job.exif_stem else None)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if job.junk:
        (out / job.files[0][1]).with_name("._mask1.jpg").write_bytes(JUNK_BYTES)


def _train_jobs(rng: np.random.Generator, n: int, seed: int) -> tuple[list[Job], list[list[str]]]:
    """Train persons: jobs to draw and train.csv rows, with the quirks spread over them."""
    genders = [int(g) for g in (rng.random(n) < FEMALE_P)]
    ages = _band_ages(rng, n)
    races = ["Asian" if rng.random() > 0.1 else str(rng.choice(OTHER_RACES)) for _ in range(n)]
    if n >= 10 and all(r == "Asian" for r in races):
        races[int(rng.integers(n))] = OTHER_RACES[0]
    ids = np.sort(rng.choice(np.arange(1, 8000), size=n, replace=False))
    jpeg, png, exif, junk = (_forced(rng, n) for _ in range(4))
    jobs, rows = [], []
    for i in range(n):
        pid = f"{ids[i]:06d}"
        folder = f"{pid}_{labels.GENDER_NAMES[genders[i]]}_{races[i]}_{ages[i]}"
        ext = {s: ".jpg" for s in STEMS}
        if i in jpeg:
            ext[STEMS[int(rng.integers(7))]] = ".jpeg"
        if i in png:
            ext[STEMS[int(rng.integers(7))]] = ".png"
        jpg_stems = [s for s in STEMS if ext[s] == ".jpg"]
        exif_stem = jpg_stems[int(rng.integers(len(jpg_stems)))] if i in exif else None
        files = tuple((s, f"train/images/{folder}/{s}{ext[s]}") for s in STEMS)
        jobs.append(Job((seed, 1, i), genders[i], ages[i], files, exif_stem, i in junk))
        rows.append([pid, labels.GENDER_NAMES[genders[i]], races[i], str(ages[i]), folder])
    return jobs, rows


def _eval_jobs(rng: np.random.Generator, n: int, seed: int) -> tuple[list[Job], list[list[str]]]:
    """Eval persons: jobs to draw and (ImageID, true class) rows in a shuffled order, like info.csv."""
    genders = [int(g) for g in (rng.random(n) < FEMALE_P)]
    ages = _band_ages(rng, n)
    exif = _forced(rng, n)
    jobs, answers = [], []
    for i in range(n):
        names = [f"{int(rng.integers(1 << 62)):016x}{int(rng.integers(1 << 62)):016x}.jpg" for _ in STEMS]
        files = tuple((s, f"eval/images/{name}") for s, name in zip(STEMS, names))
        exif_stem = STEMS[int(rng.integers(7))] if i in exif else None
        jobs.append(Job((seed, 2, i), genders[i], ages[i], files, exif_stem))
        band = labels.age_band(ages[i])
        answers += [[name, str(labels.encode(labels.IMAGE_STEMS[s], genders[i], band))]
                    for s, name in zip(STEMS, names)]
    order = rng.permutation(len(answers))
    return jobs, [answers[j] for j in order]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def synthesize(out: str | Path, persons: int = 120, eval_persons: int = 40, seed: int = 0) -> None:
    """Write synthetic data in the raw layout to OUT (train/, eval/ and eval/answers.csv).

    Same seed, same bytes. Refuses an OUT that exists and is not an empty folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; choose a new OUT or empty it first")
    if persons < 1 or eval_persons < 0:
        raise UserError(f"--persons must be >= 1 and --eval-persons >= 0 (got {persons}, {eval_persons})")
    rng = np.random.default_rng([seed, 0])
    train_jobs, train_rows = _train_jobs(rng, persons, seed)
    eval_jobs, answers = _eval_jobs(rng, eval_persons, seed) if eval_persons else ([], [])
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "train" / "train.csv", ["id", "gender", "race", "age", "path"], train_rows)
    jobs = [(out, j) for j in train_jobs + eval_jobs]
    procs = min(os.cpu_count() or 1, 8, max(1, len(jobs) // 8))
    if procs > 1:
        with get_context("fork").Pool(procs) as pool:
            for _ in pool.imap_unordered(_draw_job, jobs, chunksize=2):
                pass
    else:
        for job in jobs:
            _draw_job(job)
    if train_jobs:
        # A macOS junk file at the images level too, which readers must skip.
        (out / "train" / "images" / f"._{train_rows[0][4]}").write_bytes(JUNK_BYTES)
    if eval_jobs:
        _write_csv(out / "eval" / "info.csv", ["ImageID", "ans"], [[a[0], "0"] for a in answers])
        _write_csv(out / "eval" / "answers.csv", ["ImageID", "ans"], answers)
    print(f"wrote {persons} train persons ({persons * 7} images) and {eval_persons} eval persons "
          f"({eval_persons * 7} images) to {out}" + (f"; truth in {out / 'eval' / 'answers.csv'}" if eval_jobs else ""))
