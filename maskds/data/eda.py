"""`maskds eda`: plots of the raw data's labels, ages, folds and sample images, plus a summary.md to read first."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from maskds.core import images, labels  # noqa: E402
from maskds.core.errors import UserError  # noqa: E402
from maskds.data.corrections import apply_corrections, load_corrections  # noqa: E402
from maskds.data.folds import assign_folds, person_table, strata  # noqa: E402
from maskds.data.layout import read_train, scan  # noqa: E402

EDA_FOLDS, EDA_SEED = 5, 42  # the build's defaults, so the plot shows the folds a default cache gets
SAMPLES_PER_CLASS = 3
THUMB_W, THUMB_H = 96, 128


def _bar(ax, names, values, title, rotate=False):
    bars = ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), names, rotation=90 if rotate else 0, fontsize=8 if rotate else 10)
    ax.bar_label(bars, fontsize=7)
    ax.set_title(title)
    ax.set_ylabel("images")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_classes(cls_counts: Counter, path: Path) -> None:
    """The 18-class distribution (images per class)."""
    fig, ax = plt.subplots(figsize=(12, 4.5))
    names = [f"{c} {labels.class_name(c)}" for c in range(labels.NUM_CLASSES)]
    _bar(ax, names, [cls_counts[c] for c in range(labels.NUM_CLASSES)], "images per class (18)", rotate=True)
    _save(fig, path)


def plot_heads(records, bands, path: Path) -> None:
    """Each head's distribution: mask, gender, age band."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (name, values) in zip(axes, (("mask", [r.mask for r in records]), ("gender", [r.gender for r in records]),
                                         ("age", bands))):
        c = Counter(values)
        _bar(ax, labels.HEADS[name], [c[i] for i in range(labels.HEAD_SIZES[name])], f"{name} head")
    _save(fig, path)


def plot_ages(ages: list[int], thresholds, path: Path) -> None:
    """Histogram of persons by age, with the band thresholds drawn."""
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.hist(ages, bins=np.arange(min(ages), max(ages) + 2) - 0.5, color="tab:gray")
    for t in thresholds:
        ax.axvline(t - 0.5, color="tab:red", linestyle="--")
        ax.text(t - 0.4, ax.get_ylim()[1] * 0.95, f"band starts at {t}", color="tab:red", fontsize=8)
    ax.set_xlabel("age (60 means 60 or older)")
    ax.set_ylabel("persons")
    ax.set_title("age histogram (persons)")
    _save(fig, path)


def plot_folds(table, fold_of: dict[str, int], thresholds, path: Path) -> None:
    """Share of each gender x age band stratum per fold, beside the whole data set."""
    y = strata(table, thresholds)
    fold = np.array([fold_of[p] for p in table["person_id"]])
    groups = [("all", np.ones(len(y), bool))] + [(f"fold {f}", fold == f) for f in range(EDA_FOLDS)]
    fig, ax = plt.subplots(figsize=(9, 4))
    bottom = np.zeros(len(groups))
    for s in range(6):
        share = np.array([(y[m] == s).mean() for _, m in groups])
        name = f"{labels.GENDER_NAMES[s // 3]} {labels.AGE_NAMES[s % 3]}"
        ax.bar([g for g, _ in groups], share, bottom=bottom, label=name)
        bottom += share
    ax.set_ylabel("share of persons")
    ax.set_title(f"fold balance (k={EDA_FOLDS}, seed={EDA_SEED}; persons per fold: "
                 f"{', '.join(str(int(m.sum())) for _, m in groups[1:])})")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    _save(fig, path)


def plot_samples(data: Path, records, classes: list[int], path: Path) -> None:
    """A grid with up to 3 sample images (from different persons) for each of the 18 classes."""
    picked: dict[int, list] = {c: [] for c in range(labels.NUM_CLASSES)}
    for r, c in zip(records, classes):
        if len(picked[c]) < SAMPLES_PER_CLASS and all(p.person_id != r.person_id for p in picked[c]):
            picked[c].append(r)
    fig, axes = plt.subplots(6, 3, figsize=(10, 10.5))
    for c in range(labels.NUM_CLASSES):
        m, g, a = labels.decode(c)
        ax = axes[g * 3 + a][m]
        strip = Image.new("RGB", (THUMB_W * SAMPLES_PER_CLASS, THUMB_H), "white")
        for i, r in enumerate(picked[c]):
            strip.paste(images.prepare(data / r.path, (THUMB_H, THUMB_W)), (i * THUMB_W, 0))
        ax.imshow(strip)
        ax.set_title(f"{c}: {labels.class_name(c)}", fontsize=9)
        ax.axis("off")
    _save(fig, path)


def run_eda(data: str | Path, out: str | Path, age_thresholds=labels.DEFAULT_AGE_THRESHOLDS,
            corrections: str = "default") -> Path:
    """Write the EDA plots and summary.md for the raw layout DATA into OUT, labels corrected as `build` does."""
    data, out = Path(data), Path(out)
    thresholds = tuple(int(t) for t in age_thresholds)
    if len(thresholds) != 2 or not 0 < thresholds[0] < thresholds[1]:
        raise UserError(f"--age-thresholds must be two increasing ages LOW HIGH, got {list(thresholds)}")
    records, applied, _ = apply_corrections(read_train(data), load_corrections(corrections))
    out.mkdir(parents=True, exist_ok=True)
    bands = [labels.age_band(r.age, thresholds) for r in records]
    classes = [labels.encode(r.mask, r.gender, b) for r, b in zip(records, bands)]
    table = person_table(records)
    plot_classes(Counter(classes), out / "classes.png")
    plot_heads(records, bands, out / "heads.png")
    plot_ages(list(table["age"]), thresholds, out / "ages.png")
    fold_of = assign_folds(table, EDA_FOLDS, EDA_SEED) if len(table) >= EDA_FOLDS else None
    if fold_of:
        plot_folds(table, fold_of, thresholds, out / "folds.png")
    plot_samples(data, records, classes, out / "samples.png")
    ev = scan(data).eval
    (out / "summary.md").write_text(_summary(data, records, classes, table, thresholds, (corrections, applied),
                                             fold_of is not None, None if ev is None else len(ev)))
    print(f"wrote EDA of {data} to {out} (start with {out / 'summary.md'})")
    return out


def _summary(data, records, classes, table, thresholds, corrected, has_folds, n_eval) -> str:
    """The markdown a competitor reads first: key numbers, the rarest classes, and links to the plots."""
    cls = Counter(classes)
    n = len(records)
    low, high = thresholds
    ages = table["age"]
    rare = sorted(range(labels.NUM_CLASSES), key=lambda c: cls[c])[:3]
    lines = [
        f"# EDA of `{data}`", "",
        f"- **{len(table)} persons, {n} train images** (7 per person); eval: "
        + (f"{n_eval} images (labels hidden)" if n_eval is not None else "no eval/ folder"),
        f"- age bands: < {low}, {low}..{high - 1}, >= {high}; ages {ages.min()}..{ages.max()}, median "
        f"{ages.median():.0f}; persons per band: "
        + ", ".join(f"{name} {sum(labels.age_band(a, thresholds) == b for a in ages)}"
                    for b, name in enumerate(labels.AGE_NAMES)),
        f"- gender: {(table['gender'] == 1).mean():.0%} female",
        f"- mask: wear is {sum(r.mask == 0 for r in records) / n:.0%} of images (5 of 7 per person)",
        "- rarest classes: " + ", ".join(f"{c} {labels.class_name(c)} ({cls[c]} images)" for c in rare),
        f"- label corrections applied ({corrected[0]}): {len(corrected[1])}",
        "- the metric is macro F1 over 18 classes: each rare class weighs as much as the largest;"
        " split by person (all 7 images in one fold) or validation leaks.", "",
        "## Plots", "",
        "![18 classes](classes.png)", "", "![heads](heads.png)", "", "![ages](ages.png)", "",
    ]
    if has_folds:
        lines += ["![fold balance](folds.png)", ""]
    lines += ["![samples per class](samples.png)", "", "## Images per class", "", "| id | class | images |",
              "|---:|---|---:|"]
    lines += [f"| {c} | {labels.class_name(c)} | {cls[c]} |" for c in range(labels.NUM_CLASSES)]
    return "\n".join(lines) + "\n"
