"""Label and fold counts of a built cache, and the rich summary table `maskds build` ends with."""
from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from maskds.core import labels


def counts(train_rows: list[dict], eval_rows: list[dict] | None, k: int,
           thresholds=labels.DEFAULT_AGE_THRESHOLDS) -> dict:
    """Persons, images, per-head image counts (age bands at `thresholds`) and per-fold counts."""
    persons = {r["person_id"]: r for r in train_rows}
    bands = [labels.age_band(r["age"], thresholds) for r in train_rows]
    per_fold = {}
    for f in range(k):
        people = [p for p in persons.values() if p["fold"] == f]
        per_fold[str(f)] = {
            "persons": len(people),
            "images": sum(1 for r in train_rows if r["fold"] == f),
            "female": sum(p["gender"] for p in people),
            "age_band": [sum(1 for p in people if labels.age_band(p["age"], thresholds) == b) for b in range(3)],
        }
    mask, gender = Counter(r["mask"] for r in train_rows), Counter(r["gender"] for r in train_rows)
    band = Counter(bands)
    return {
        "persons": len(persons), "train_images": len(train_rows),
        "eval_images": len(eval_rows) if eval_rows is not None else None,
        "mask": [mask[i] for i in range(3)], "gender": [gender[i] for i in range(2)],
        "age_band": [band[i] for i in range(3)], "age_thresholds": list(thresholds), "folds": per_fold,
    }


def print_summary(meta: dict, console: Console) -> None:
    """Print the cache's counts: totals and heads in one table, folds in another."""
    c = meta["counts"]
    corr = meta["corrections"]
    head = Table(title=f"cache {meta['args']['size'][0]}x{meta['args']['size'][1]}",
                 caption=f"corrections: {corr['source']}, {len(corr['applied'])} label(s) changed")
    head.add_column("what")
    head.add_column("count", justify="right")
    head.add_row("persons", str(c["persons"]))
    head.add_row("train images", str(c["train_images"]))
    head.add_row("eval images", "no eval/" if c["eval_images"] is None else str(c["eval_images"]))
    for kind in ("extra", "pseudo"):  # training rows that never validate (partial or pseudo labels)
        if c.get(f"{kind}_images"):
            head.add_row(f"{kind} images (train only)", str(c[f"{kind}_images"]))
    if c.get("extra_age_unused"):  # an age range across two bands: the row's other labels train
        head.add_row("extra images, age not used (a range across two bands)", str(c["extra_age_unused"]))
    for name, values in (("mask", c["mask"]), ("gender", c["gender"]), ("age", c["age_band"])):
        for label, n in zip(labels.HEADS[name], values):
            head.add_row(f"{name} {label}", f"{n} ({n / max(c['train_images'], 1):.0%})")
    folds = Table(title="folds (persons; age bands at the default thresholds)")
    for col in ("fold", "persons", "images", "female", *labels.AGE_NAMES):
        folds.add_column(col, justify="right")
    for f, fc in c["folds"].items():
        folds.add_row(f, str(fc["persons"]), str(fc["images"]),
                      f"{fc['female'] / max(fc['persons'], 1):.0%}", *(str(b) for b in fc["age_band"]))
    console.print(head)
    console.print(folds)
    face = meta.get("face_crop")
    if face and face.get("marked_faces"):
        console.print(f"{face['marked_faces']} extra image(s) marked as face crops: cut to the cache's shape, "
                      "not face-cropped")
    if face and face["method"] == "fixed":
        console.print(f"face crop fixed (margin {face['margin']:g}): the upper-centre box of a chest-up portrait, "
                      "for every photo")
    elif face:
        console.print(f"face crop {face['method']} (margin {face['margin']:g}): face found in {face['found']} "
                      f"image(s); {face['fallback']} fell back to the fixed upper-centre crop"
                      + ("" if not face["fallback"] else ":"))
        for path in face["fallback_paths"][:20]:
            console.print(f"  {path}")
        if face["fallback"] > 20:
            console.print(f"  ... and {face['fallback'] - 20} more (all in maskds_cache.json, the first 100)")
