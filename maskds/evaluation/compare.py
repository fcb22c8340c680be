"""`maskds compare`: is B better than A beyond the noise, on held-out answers or on the runs' out-of-fold rows."""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from maskds.core.errors import UserError, few
from maskds.core.labels import HEAD_NAMES
from maskds.evaluation.bootstrap import DRAWS, SEED, compare_predictions


@dataclass(frozen=True)
class Sides:
    """What is compared: the truth and person code of N images, and each side's runs' class ids [N]."""
    truth: np.ndarray
    person: np.ndarray
    preds_a: list[np.ndarray]
    preds_b: list[np.ndarray]
    what: str  # "submissions" or "out-of-fold"


def _check_sides(a: list, b: list, what: str, needs: str) -> None:
    empty = [s for s, paths in (("A (--a)", a), ("B (--b)", b)) if not paths]
    if empty:
        raise UserError(f"compare: side {' and side '.join(empty)} has no {what}; give each side one or more "
                        f"{needs} in seed order: maskds compare --a ... --b ...")


def submission_sides(answers: str | Path, a: list, b: list) -> Sides:
    """Submissions (infer.py's ImageID,ans) against held-out answers with a `person` column (the devbench's
    answers.csv). A submission must cover exactly the answers' images."""
    from maskds.evaluation.score import align, read_answers_csv

    _check_sides(a, b, "submissions", "submission CSVs (ImageID,ans)")
    folders = [p for p in (*a, *b) if Path(p).is_dir()]
    if folders:
        raise UserError(f"{few(folders)}: a folder, not a submission CSV; runs (runs/NAME) are compared without "
                        "--answers, over their out-of-fold rows: maskds compare --a runs/A ... --b runs/B ...")
    truth_by_id = read_answers_csv(answers, "answers")
    frame = pd.read_csv(answers, dtype=str, keep_default_na=False)
    if "person" not in frame.columns:
        raise UserError(f"answers file {answers} has no person column: the bootstrap resamples whole persons "
                        "(rebuild the devbench with build.sh, or add the column ImageID,ans,person)")
    blank = frame["ImageID"][frame["person"].str.strip() == ""]
    if len(blank):
        raise UserError(f"answers file {answers}: ImageID(s) without a person: {few(blank)}")
    person = pd.factorize(frame["person"])[0]  # in the answers' row order, as the devbench's compare.py

    def preds(path) -> np.ndarray:
        return align(read_answers_csv(path, "submission"), truth_by_id, path, answers)[1]

    return Sides(truth_by_id.to_numpy(), person, [preds(p) for p in a], [preds(p) for p in b], "submissions")


def _read_run(run: str | Path) -> pd.DataFrame:
    """A run's out-of-fold rows keyed by (person_id, image_name): truth and the predicted class."""
    from maskds.evaluation.oof import class_probs, read_oof  # lazy: it imports torch

    if Path(run).is_file():
        raise UserError(f"{run} is a file: submissions are compared against held-out answers "
                        "(--answers ANSWERS.csv); without --answers, --a and --b name run folders (runs/NAME)")
    oof = read_oof(run)
    if "image_name" not in oof.columns:
        raise UserError(f"{run}: oof.csv has no image_name column; retrain the folds with this maskds")
    if oof.empty:
        raise UserError(f"{run}: its oof.csv files hold no rows; train the folds to their first validation")
    frame = pd.DataFrame({"truth": oof["truth"].to_numpy(np.int64), "pred": class_probs(oof).argmax(1)},
                         index=pd.MultiIndex.from_arrays([oof["person_id"], oof["image_name"]]))
    twice = frame.index[frame.index.duplicated()]
    if len(twice):
        raise UserError(f"{run}: image(s) validated twice: {few(f'{p}/{i}' for p, i in twice)}")
    return frame.sort_index()


def _same_rows(ref: pd.DataFrame, ref_run, other: pd.DataFrame, run) -> None:
    if ref.index.equals(other.index):
        bad = ref.index[ref["truth"].to_numpy() != other["truth"].to_numpy()]
        if len(bad):
            raise UserError(f"{run} and {ref_run} give other truth to the same image(s) (other corrections?): "
                            f"{few(f'{p}/{i}' for p, i in bad)}")
        return
    mine, theirs = set(other.index.get_level_values(0)), set(ref.index.get_level_values(0))
    problems = [f"only {name} validated person(s) {few(sorted(ids))} ({len(ids)})"
                for name, ids in ((run, mine - theirs), (ref_run, theirs - mine)) if ids]
    if not problems:  # the same persons, other images
        only = other.index.symmetric_difference(ref.index)
        problems = [f"image(s) validated by one of them only: {few(f'{p}/{i}' for p, i in only)}"]
    raise UserError(f"{run} and {ref_run} validated different persons; compare runs trained on the same folds "
                    "of caches split the same way (same fold seed and persons)", problems)


def run_sides(a: list, b: list) -> Sides:
    """Runs' out-of-fold predictions (runs/NAME with fold<k>/oof.csv): every run must have validated the
    same images, with the same truth."""
    _check_sides(a, b, "runs", "run folders (runs/NAME)")
    frames = {("A", i): _read_run(r) for i, r in enumerate(a)} | {("B", i): _read_run(r) for i, r in enumerate(b)}
    names = {("A", i): r for i, r in enumerate(a)} | {("B", i): r for i, r in enumerate(b)}
    ref = frames[("A", 0)]
    for key, frame in frames.items():
        _same_rows(ref, names[("A", 0)], frame, names[key])
    person = pd.factorize(ref.index.get_level_values(0))[0]
    return Sides(ref["truth"].to_numpy(), person, [frames[("A", i)]["pred"].to_numpy() for i in range(len(a))],
                 [frames[("B", i)]["pred"].to_numpy() for i in range(len(b))], "out-of-fold")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _num(v: float, sign: bool = False) -> str:
    return "n/a" if not math.isfinite(v) else (f"{v:+.4f}" if sign else f"{v:.4f}")


def print_result(result: dict, a: list, b: list) -> None:
    """The runs' scores, each side's mean and sd, the differences and the verdict, as rich tables."""
    console = Console(highlight=False)
    t = Table(title=f"macro F1 (18 classes), {result['what']}: {result['images']} images of {result['persons']} "
              "persons")
    for col in ("side", "run", "macro F1", "sd"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for side, paths, key in (("A", a, "a"), ("B", b, "b")):
        for path, v in zip(paths, result[f"{key}_scores"]):
            t.add_row(side, escape(str(path)), _num(v), "")
        t.add_row(f"[bold]{side}[/]", f"[bold]mean of {len(paths)}[/]", f"[bold]{_num(result[f'{key}_mean'])}[/]",
                  _num(result[f"{key}_sd"]), end_section=True)
    console.print(t)
    h = Table(title="per head (macro F1, mean of each side's runs)")
    for col in ("head", "A", "B", "B - A"):
        h.add_column(col, justify="right")
    for name in HEAD_NAMES:
        r = result["heads"][name]
        h.add_row(name, _num(r["a"]), _num(r["b"]), _num(r["diff"], sign=True))
    console.print(h)
    lo, hi = result["interval"]
    seeds = (f"paired over {result['pairs']} seed(s): {_num(result['seed_diff'], True)} +- "
             f"{_num(result['paired_se'])} (SE)" if result["paired"] else
             f"unpaired ({len(a)} vs {len(b)} runs): SE {_num(result['paired_se'])}")
    console.print(f"B - A: {_num(result['diff'], True)}; {seeds}; 95% interval over eval persons "
                  f"[{_num(lo, True)}, {_num(hi, True)}] ({result['draws']} draws, seed {result['seed']})",
                  soft_wrap=True)
    console.print(f"[bold]verdict: {result['verdict']}[/]", soft_wrap=True)
    if min(len(a), len(b)) < 3:
        console.print("[dim]one model's score moves with the seed: a verdict needs three seeds a side[/]",
                      soft_wrap=True)
    elif result["verdict"] == "no difference shown":
        console.print("[dim]keep A, or run more seeds[/]")


def compare(a: list, b: list, answers: str | Path | None = None, draws: int = DRAWS, seed: int = SEED,
            as_json: bool = False) -> dict:
    """Compare side B with side A (each a list of submissions with `answers`, or of run folders without),
    print the tables (or one JSON line) and return the result (`bootstrap.compare_predictions`'s keys)."""
    if draws < 1:
        raise UserError(f"--draws must be >= 1, got {draws}")
    if answers is not None:
        sides = submission_sides(answers, a, b)
    else:
        csvs = [p for p in (*a, *b) if str(p).lower().endswith(".csv") and not Path(p).is_dir()]
        if csvs:
            raise UserError(f"{few(csvs)}: submissions need --answers ANSWERS.csv (held-out answers with a "
                            "person column); without it, --a and --b name run folders (runs/NAME)")
        sides = run_sides(a, b)
    result = compare_predictions(sides.truth, sides.person, sides.preds_a, sides.preds_b, draws, seed)
    result = {**result, "what": sides.what, "a": [str(p) for p in a], "b": [str(p) for p in b]}
    if as_json:
        print(json.dumps(_json_safe(result)), flush=True)
    else:
        print_result(result, a, b)
    return result


def run_compare(args: argparse.Namespace) -> int:
    """The `maskds compare` subcommand (a UserError is the CLI's exit 2)."""
    compare(args.a, args.b, answers=args.answers, draws=args.draws, seed=args.seed, as_json=args.json)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `maskds compare` on the CLI's subparsers."""
    c = subparsers.add_parser(
        "compare", help="is B better than A beyond the noise (seeds and eval persons)?",
        description="Each run's macro F1 (18 classes), each side's mean and sd, the difference B - A paired by "
        "seed (runs given in the same seed order; unpaired when the sides have different numbers of runs), a 95% "
        "interval for it that resamples whole persons, per-head means, and one verdict: 'B is better' only when "
        "the interval lies above 0 and the seeds agree ('B is worse' mirrored), else 'no difference shown'. The "
        "seeds agree when, with as many runs a side, the mean paired difference is at least twice its SE (always "
        "with one run a side); with different numbers (e.g. 1 vs 3), when the difference of the means is at "
        "least twice its unpaired SE (a side of one run takes the other side's sd): this can block a verdict "
        "the interval alone would give. With --answers: submissions (infer.py's CSVs) against "
        "held-out answers with a person column (the devbench's answers.csv); without: run folders, over the "
        "out-of-fold images every run validated (the same persons on both sides).",
        epilog="e.g. maskds compare --a subA_s1.csv subA_s2.csv subA_s3.csv --b subB_s1.csv subB_s2.csv "
        "subB_s3.csv --answers devbench/answers.csv; maskds compare --a runs/base_s1 runs/base_s2 --b runs/ext_s1 "
        "runs/ext_s2")
    c.add_argument("--a", nargs="*", default=[], metavar="PATH", required=True,
                   help="side A: submissions (with --answers) or run folders, in seed order")
    c.add_argument("--b", nargs="*", default=[], metavar="PATH", required=True,
                   help="side B: the same kind as --a, in the same seed order")
    c.add_argument("--answers", type=Path, default=None, metavar="ANSWERS.csv",
                   help="held-out answers (ImageID,ans,person) for submissions; leave out for run folders")
    c.add_argument("--draws", type=int, default=DRAWS, help=f"person bootstrap draws (default {DRAWS})")
    c.add_argument("--seed", type=int, default=SEED, help=f"person bootstrap seed (default {SEED})")
    c.add_argument("--json", action="store_true", help="print one JSON line instead of tables")
    c.set_defaults(func=run_compare)
    return c
