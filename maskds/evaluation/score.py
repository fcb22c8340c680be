"""`maskds score`: a submission against the answers: macro F1, per-head F1, accuracy, confusion matrix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from maskds.core.errors import UserError, few
from maskds.core.labels import NUM_CLASSES, class_name
from maskds.core.metrics import confusion, scores


def read_answers_csv(path: str | Path, role: str) -> pd.Series:
    """Read an `ImageID,ans` CSV as a Series ans indexed by ImageID, checking ids and class range.

    `role` ("submission" or "answers") is named in every error so the user knows which file to fix.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{role} file {p} does not exist")
    try:
        df = pd.read_csv(p, dtype={"ImageID": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{role} file {p} is not a readable CSV: {err}") from None
    missing = [c for c in ("ImageID", "ans") if c not in df.columns]
    if missing:
        raise UserError(f"{role} file {p} has no {' / '.join(missing)} column; expected a header "
                        f"ImageID,ans (it has: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise UserError(f"{role} file {p} has no rows")
    dup = df["ImageID"][df["ImageID"].duplicated()].unique()
    if len(dup):
        raise UserError(f"{role} file {p} lists ImageID(s) more than once: {few(dup)}")
    ans = pd.to_numeric(df["ans"], errors="coerce")
    bad = ~(ans.notna() & (ans % 1 == 0) & ans.between(0, NUM_CLASSES - 1))
    if bad.any():
        rows = [f"{i}={v}" for i, v in zip(df["ImageID"][bad], df["ans"][bad])]
        raise UserError(f"{role} file {p}: ans must be a class id 0..{NUM_CLASSES - 1}; bad rows: {few(rows)}")
    return pd.Series(ans.astype(np.int64).to_numpy(), index=df["ImageID"].to_numpy(), name="ans")


def align(submission: pd.Series, answers: pd.Series, sub_path, ans_path) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) in the answers' order; ids present in only one file are an error."""
    missing = answers.index.difference(submission.index, sort=False)
    extra = submission.index.difference(answers.index, sort=False)
    problems = []
    if len(missing):
        problems.append(f"{len(missing)} ImageID(s) of {ans_path} are missing from {sub_path}: {few(missing)}")
    if len(extra):
        problems.append(f"{len(extra)} ImageID(s) of {sub_path} are not in {ans_path}: {few(extra)}")
    if problems:
        raise UserError("the submission and the answers do not cover the same images", problems)
    return answers.to_numpy(), submission.loc[answers.index].to_numpy()


def run_score(submission: str | Path, answers: str | Path, as_json: bool = False,
              plot: str | Path | None = None) -> dict[str, float]:
    """Score `submission` against `answers` (both `ImageID,ans` CSVs); print and return the scores.

    Prints a rich table of the scores and the 18x18 confusion matrix, or with `as_json` exactly one
    JSON line (macro_f1, mask_f1, gender_f1, age_f1, accuracy, n). `plot` writes the matrix as a PNG.
    """
    sub = read_answers_csv(submission, "submission")
    ans = read_answers_csv(answers, "answers")
    y_true, y_pred = align(sub, ans, submission, answers)
    result = scores(y_true, y_pred)
    matrix = confusion(y_true, y_pred)
    if plot is not None:
        plot_confusion(matrix, plot)
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print_tables(result, matrix, submission, plot)
    return result


def print_tables(result: dict, matrix: np.ndarray, submission, plot) -> None:
    """Scores and the confusion matrix as rich tables on stdout."""
    console = Console()
    t = Table(title=f"score of {submission} ({result['n']} images)")
    for col in ("macro F1 (18)", "mask F1", "gender F1", "age F1", "accuracy"):
        t.add_column(col, justify="right")
    t.add_row(*(f"{result[k]:.4f}" for k in ("macro_f1", "mask_f1", "gender_f1", "age_f1", "accuracy")))
    console.print(t)
    cm = Table(title="confusion matrix (rows = truth, columns = prediction)", show_lines=False)
    cm.add_column("truth", no_wrap=True)
    for c in range(NUM_CLASSES):
        cm.add_column(str(c), justify="right")
    for r in range(NUM_CLASSES):
        cells = [(f"[bold green]{v}[/]" if r == c and v else (str(v) if v else "[dim].[/]"))
                 for c, v in enumerate(matrix[r])]
        cm.add_row(f"{r:2d} {class_name(r)}", *cells)
    # 18 count columns need ~130 characters; rich would squeeze them to nothing on an 80-column
    # (or piped) console, so print the matrix at least that wide.
    wide = max(console.width, 30 + NUM_CLASSES * (len(str(matrix.max())) + 3))
    Console(width=wide).print(cm)
    if plot is not None:
        console.print(f"confusion matrix plot: {plot}")


def plot_confusion(matrix: np.ndarray, path: str | Path) -> Path:
    """Write the 18x18 confusion matrix as a PNG (rows = truth), counts written in the cells."""
    import matplotlib  # lazy: only --plot needs it, and pyplot is slow to import

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{c} {class_name(c)}" for c in range(NUM_CLASSES)]
    fig, ax = plt.subplots(figsize=(11, 10))
    # Row-normalised colours so rare classes are as visible as common ones; cells show raw counts.
    rows = matrix.sum(axis=1, keepdims=True)
    ax.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    for r in range(NUM_CLASSES):
        for c in range(NUM_CLASSES):
            if matrix[r, c]:
                ax.text(c, r, str(matrix[r, c]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[r, c] > 0.5 * max(rows[r, 0], 1) else "black")
    ax.set_xticks(range(NUM_CLASSES), names, rotation=90, fontsize=7)
    ax.set_yticks(range(NUM_CLASSES), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title("confusion matrix (colour: share of the true class)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
