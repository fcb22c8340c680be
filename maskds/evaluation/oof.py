"""`maskds oof`: the cross-validated score of a run from its folds' out-of-fold files, and an error gallery."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from rich.console import Console

from maskds.config.plan import FULL, FULL_MODEL, OOF_FILE, run_models
from maskds.core.atomic import atomic_path
from maskds.core.console import show
from maskds.core.errors import UserError
from maskds.core.labels import DEFAULT_AGE_THRESHOLDS, class_name
from maskds.core.metrics import confusion, scores
from maskds.core.probabilities import PROB_COLUMNS, probs_from_frame
from maskds.evaluation.decision import Decision, age_cut_classes, fit_age_thresholds, fit_class_weights, save_decision
from maskds.evaluation.score import plot_confusion, print_tables


def fold_dirs(run: Path) -> list[Path]:
    """The folders of a run's validating models (`fold<k>/`, the fold plan's), in fold order."""
    models = run_models(run)
    dirs = [d for m, d in models.items() if m.validates]
    if not dirs and FULL_MODEL in models:
        raise UserError(f"run folder {run} holds only {FULL}/ (folds=full: every person trained, none validated), "
                        "so it has no out-of-fold predictions; train the cross-validated folds (folds=all) for them")
    if not dirs:
        raise UserError(f"run folder {run} holds no fold<k>/ folders; train it first (accelerate launch train.py ...)")
    return dirs


def read_oof(run: str | Path) -> pd.DataFrame:
    """Every fold's oof.csv joined: one row per validation image of every trained fold.

    Refused, naming the folder: a fold without oof.csv (not trained to its first validation, or by an
    older maskds), folds trained on different caches, a person predicted by two folds.
    """
    dirs = fold_dirs(Path(run))
    missing = [d for d in dirs if not (d / OOF_FILE).is_file()]
    if missing:
        raise UserError(f"{', '.join(map(str, missing))}: no {OOF_FILE}; train the fold (each fold writes it "
                        "at its best epoch) or remove the folder")
    frames = []
    for d in dirs:
        try:
            frame = pd.read_csv(d / OOF_FILE, dtype={"person_id": str, "image_name": str, "path": str,
                                                     "cache_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UserError(f"{d / OOF_FILE} is not a readable CSV ({err}); retrain the fold") from None
        absent = [c for c in ("row", "person_id", "truth", "cache_id", *PROB_COLUMNS) if c not in frame.columns]
        if absent:
            raise UserError(f"{d / OOF_FILE} lacks column(s) {', '.join(absent[:5])}; retrain the fold")
        frames.append(frame.assign(folder=str(d)))
    caches = {f["cache_id"].iloc[0]: f["folder"].iloc[0] for f in frames if len(f)}
    if len(caches) > 1:
        raise UserError(f"the folds of {run} were trained on different caches; their out-of-fold predictions "
                        "do not add up", [f"{folder}: cache {cid}" for cid, folder in caches.items()])
    joined = pd.concat(frames, ignore_index=True)
    twice = joined.groupby("person_id")["folder"].nunique()
    if (twice > 1).any():
        raise UserError(f"person(s) {', '.join(twice[twice > 1].index[:5])} are predicted by more than one fold "
                        f"of {run}; the folds were not split by person from one cache")
    return joined


def class_probs(oof: pd.DataFrame) -> np.ndarray:
    """[N, 18] class probabilities of the out-of-fold rows."""
    return oof[[f"class_p{i}" for i in range(18)]].to_numpy(np.float64)


def _fold_configs(run: str | Path) -> dict[Path, dict]:
    configs = {}
    for d in fold_dirs(Path(run)):
        try:
            configs[d] = yaml.safe_load((d / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UserError(f"{d / 'config.yaml'} cannot be read ({err})") from None
    return configs


def run_heads(run: str | Path) -> dict:
    """The heads ({head, age_head}) the run's folds were trained with; all folds must agree."""
    found = {d: {"head": c.get("head", "multihead"), "age_head": c.get("age_head", "bands")}
             for d, c in _fold_configs(run).items()}
    if len({json.dumps(h, sort_keys=True) for h in found.values()}) > 1:
        raise UserError(f"the folds of {run} hold different heads", [f"{d}: {h}" for d, h in found.items()])
    return next(iter(found.values()))


def run_age_thresholds(run: str | Path) -> tuple[int, int]:
    """The age band cuts the run's folds were trained with; all folds must agree."""
    found = {d: tuple(c.get("age_thresholds", DEFAULT_AGE_THRESHOLDS)) for d, c in _fold_configs(run).items()}
    if len(set(found.values())) > 1:
        raise UserError(f"the folds of {run} were trained with different age_thresholds",
                        [f"{d}: {t}" for d, t in found.items()])
    low, high = next(iter(found.values()))
    return int(low), int(high)


def run_oof(run: str | Path, as_json: bool = False, plot: str | Path | None = None,
            gallery: str | Path | None = None, top: int = 36, tune: str | None = None) -> dict:
    """Print (or return as one JSON line) the cross-validated scores of a run; optional plots; with
    `tune` (class, head or age: see `tune_decision`), fit a decision for macro F1 on these predictions,
    saved as RUN/decision.json."""
    oof = read_oof(run)
    probs, y_true = class_probs(oof), oof["truth"].to_numpy()
    y_pred = probs.argmax(1)
    result = {**scores(y_true, y_pred), "folds": int(oof["fold"].nunique()), "persons": int(oof["person_id"].nunique())}
    if tune:
        path, _, result["tuned"], rule = tune_decision(run, oof, tune)
    matrix = confusion(y_true, y_pred)
    if plot is not None:
        plot_confusion(matrix, plot)
    if gallery is not None:
        write_gallery(oof, gallery, top)
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print_tables(result, matrix, f"{run} out of fold ({result['folds']} folds, {result['persons']} persons)", plot)
        if gallery is not None:
            Console().print(f"error gallery: {gallery}")
        if tune:
            Console().print(f"tuned decision ({rule}) -> {path}: out-of-fold macro F1 {result['macro_f1']:.4f} "
                            f"-> {result['tuned']['macro_f1']:.4f} (optimistic: fitted on these predictions; "
                            "judge it on held-out data)")
    return result


def tune_decision(run: str | Path, oof: pd.DataFrame, kind: str) -> tuple[Path, dict, dict, str]:
    """Fit a decision on the out-of-fold rows and save it as RUN/decision.json: `kind` class (18 class
    weights), head (8 head-value weights) or age (the age bands' two cuts; a regression age head).
    Returns (its path, the out-of-fold scores without and with it, its description)."""
    heads, truth, probs = run_heads(run), oof["truth"].to_numpy(), class_probs(oof)
    before = scores(truth, probs.argmax(1))
    if kind == "age":
        if heads != {"head": "multihead", "age_head": "regression"}:
            raise UserError(f"--tune-decision age needs a run with head=multihead and age_head=regression; "
                            f"{run} holds {heads}")
        old, heads_probs = run_age_thresholds(run), probs_from_frame(oof)
        rule = cuts = fit_age_thresholds(heads_probs, truth, old)
        after = scores(truth, age_cut_classes(heads_probs, old, cuts))
        what = f"{Decision('age_thresholds', age_thresholds=cuts).describe()}, trained at {old[0]} and {old[1]}"
    elif kind in ("class", "head"):
        rule = fit_class_weights(probs, truth, per=kind)
        after, what = scores(truth, (probs * rule).argmax(1)), f"{kind} weights"
    else:
        raise UserError(f"tune decision: kind must be class, head or age, got {kind!r}")
    keep = ("macro_f1", "age_f1")
    path = save_decision(run, rule, heads, {k: before[k] for k in keep}, {k: after[k] for k in keep}, per=kind)
    return path, before, after, what


def fit_decision(run: Path, config) -> None:
    """`tune_decision` after train.py's folds (`config`: its TrainConfig): fit the decision on the out-of-fold predictions of every fold the run holds now
    (`maskds oof RUN --tune-decision KIND`). The folds are trained either way: a run it cannot be fitted
    on (a fold of another cache, a fold without oof.csv) is reported, not raised."""
    if len(config.heads) < 3:  # infer.py applies no run's decision to heads assembled with --head
        show(f"[yellow]tune_decision: not fitted, a specialist (heads={config.heads}) answers with other runs[/]")
        return
    try:  # e.g. age cuts for a tune trial's bands head: not fitted, said so
        oof = read_oof(run)
        path, before, after, rule = tune_decision(run, oof, config.tune_decision)
    except (UserError, OSError) as err:  # the folds are trained and saved either way
        show(f"[yellow]tune_decision: not fitted: {err}[/]")
        return
    show(f"tuned decision ({rule}) -> {path}: out-of-fold macro F1 {before['macro_f1']:.4f} -> "
         f"{after['macro_f1']:.4f} over {oof['fold'].nunique()} fold(s) (fitted there: judge it held out; "
         "infer.py applies it, --no-tuned-decision does not)")


def confident_mistakes(oof: pd.DataFrame, top: int) -> pd.DataFrame:
    """Up to `top` wrong out-of-fold predictions, the most confident first, a person's mistakes together."""
    probs = class_probs(oof)
    pred = probs.argmax(1)
    wrong = oof.assign(pred=pred, confidence=probs.max(1))[pred != oof["truth"].to_numpy()]
    order = wrong.groupby("person_id")["confidence"].transform("max")
    wrong = wrong.assign(person_max=order).sort_values(["person_max", "person_id", "confidence"],
                                                      ascending=[False, True, False])
    return wrong.head(top)


def _cache_of(folder: str) -> Path:
    config = Path(folder) / "config.yaml"
    try:
        return Path((yaml.safe_load(config.read_text()) or {})["cache"])
    except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
        raise UserError(f"{config} names no cache ({err}); the gallery needs the images the fold trained on") from None


def write_gallery(oof: pd.DataFrame, out: str | Path, top: int = 36) -> Path:
    """A PNG of the most confident out-of-fold mistakes: thumbnails with person, truth, prediction and
    probability, a person's images side by side. Where a mistake is a label error, the person id goes
    into your corrections file (`maskds build --corrections`)."""
    import matplotlib  # lazy: only --gallery needs it, and pyplot is slow to import

    matplotlib.use("Agg")
    import datasets  # lazy too: the scores need no arrow
    import matplotlib.pyplot as plt

    from maskds.core.images import decode_cached
    from maskds.data.cache import load_cache
    from maskds.data.cache_meta import cache_id

    mistakes = confident_mistakes(oof, top)
    cols = 6
    rows = max(1, -(-len(mistakes) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 3.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    images = {}
    for ax, (_, m) in zip(axes.flat, mistakes.iterrows()):
        cache = _cache_of(m["folder"])
        if cache not in images:
            dsd, meta = load_cache(cache)
            if cache_id(meta) != m["cache_id"]:
                raise UserError(f"{cache} is not the cache {m['folder']} was trained on (rebuilt since?); "
                                "the gallery would show other images")
            images[cache] = dsd["train"].cast_column("image", datasets.Image(decode=False))
        ax.imshow(decode_cached(images[cache][int(m["row"])]["image"]["bytes"]))
        ax.set_title(f"{m['person_id']} {m['image_name']}\ntruth {class_name(int(m['truth']))}\n"
                     f"pred {class_name(int(m['pred']))} {m['confidence']:.2f}", fontsize=7)
    if mistakes.empty:
        axes.flat[0].text(0.5, 0.5, "no out-of-fold mistakes", ha="center", va="center")
    fig.suptitle(f"most confident out-of-fold mistakes ({len(mistakes)} shown)", fontsize=10)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return Path(out)
