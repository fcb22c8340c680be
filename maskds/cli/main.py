"""`maskds` command line: synth, build, import-faces, eda, score, oof, compare, tune, pseudo (import-faces and
pseudo in `cli.external`); each a thin call into its module."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskds.cli.external import add_import_faces, add_pseudo
from maskds.core.errors import UserError
from maskds.evaluation.compare import add_parser as add_compare

# Each subcommand imports its stage lazily: `maskds --help` and `maskds score` need no torch or datasets.


def _synth(a: argparse.Namespace) -> int:
    from maskds.synth.generate import synthesize

    synthesize(a.out, persons=a.persons, eval_persons=a.eval_persons, seed=a.seed)
    return 0


def _build(a: argparse.Namespace) -> int:
    from maskds.data.cache import build_cache

    build_cache(a.data, a.cache, size_hw=tuple(a.size), folds=a.folds, seed=a.seed,
                corrections=a.corrections, num_proc=a.num_proc, force=a.force, extra=a.extra or [],
                face_crop=a.face_crop, face_margin=a.face_margin)
    return 0


def _eda(a: argparse.Namespace) -> int:
    from maskds.data.eda import run_eda

    run_eda(a.data, a.out, age_thresholds=tuple(a.age_thresholds), corrections=a.corrections)
    return 0


def _score(a: argparse.Namespace) -> int:
    from maskds.evaluation.score import run_score

    run_score(a.submission, a.answers, as_json=a.json, plot=a.plot)
    return 0


def _oof(a: argparse.Namespace) -> int:
    from maskds.evaluation.oof import run_oof

    if a.top < 1:
        raise UserError(f"--top must be >= 1, got {a.top}")
    run_oof(a.run, as_json=a.json, plot=a.plot, gallery=a.gallery, top=a.top, tune=a.tune_decision)
    return 0


def _tune(a: argparse.Namespace) -> int:
    import signal

    from maskds.tuning.space import load_space
    from maskds.tuning.tune import tune

    space = load_space(a.space, a.config, a.overrides)

    def _interrupted(signum, frame):  # a scheduler's SIGTERM: stop like Ctrl-C, the running trial marked failed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)  # a closed terminal or ssh session
    tune(a.config, a.overrides, space, a.trials, a.study, a.storage, a.runs_dir, a.launch, a.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maskds",
        description="Face-mask classification pipeline (mask x gender x age band = 18 classes). "
        "Train with `accelerate launch train.py`, predict with `python infer.py`.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_synth, _add_build, add_import_faces, _add_eda, _add_score, _add_oof, add_compare, _add_tune,
                add_pseudo):
        add(sub)
    return p


def _add_synth(sub) -> None:
    s = sub.add_parser("synth", help="write synthetic data in the competition's raw layout",
                       description="Synthetic data in the raw layout (train/ and eval/), with the "
                       "eval truth in OUT/eval/answers.csv. Same seed, same bytes.")
    s.add_argument("out", type=Path, metavar="OUT", help="folder to create (must not exist or be empty)")
    s.add_argument("--persons", type=int, default=120, help="train persons, 7 images each (default 120)")
    s.add_argument("--eval-persons", type=int, default=40, help="eval persons, 7 images each (default 40)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.set_defaults(func=_synth)


def _add_build(sub) -> None:
    b = sub.add_parser("build", help="validate the raw layout and write the arrow cache with folds",
                       description="Raw layout DATA (with train/ and eval/) to a Hugging Face datasets "
                       "cache at CACHE, folds assigned per person. Validates everything first.")
    b.add_argument("data", type=Path, metavar="DATA", help="raw data root holding train/ (and eval/)")
    b.add_argument("cache", type=Path, metavar="CACHE", help="cache folder to write")
    b.add_argument("--size", type=int, nargs=2, default=[384, 288], metavar=("H", "W"),
                   help="height and width images are resized to once, at build (default 384 288)")
    b.add_argument("--folds", type=int, default=5, help="number of person-level folds (default 5)")
    b.add_argument("--seed", type=int, default=42, help="fold assignment seed (default 42)")
    b.add_argument("--corrections", default="default", metavar="FILE|none|default",
                   help="label corrections: 'default' (documented errors shipped with maskds), "
                   "a YAML file of your own, or 'none'")
    b.add_argument("--num-proc", type=int, default=None, help="worker processes (default: CPU count)")
    b.add_argument("--force", action="store_true",
                   help="replace an existing cache built with other inputs or arguments")
    b.add_argument("--face-crop", nargs="?", const="mtcnn", default="none", metavar="mtcnn|fixed",
                   help="crop each photo to its face before resizing: mtcnn (facenet-pytorch's detector, "
                   "weights installed with maskds; photos without a face found fall back to the fixed "
                   "crop and are listed) or fixed (the upper-centre box of a chest-up portrait); inference "
                   "crops the same way (default: no crop; --face-crop alone = mtcnn)")
    b.add_argument("--face-margin", type=float, default=0.15, metavar="F",
                   help="face crop margin on each side, as a fraction of the face box (default 0.15)")
    b.add_argument("--extra", type=Path, action="append", default=None, metavar="DIR",
                   help="extra training images with partial labels: DIR/labels.csv (image, and any of mask, "
                   "gender, age, person, framing; empty = unknown) and the images; they train every fold and never "
                   "validate, and the loss skips the heads a row has no label for; repeatable")
    b.set_defaults(func=_build)


def _add_eda(sub) -> None:
    e = sub.add_parser("eda", help="plots and a markdown summary of the raw data",
                       description="PNG plots and summary.md of the raw layout DATA into OUT.")
    e.add_argument("data", type=Path, metavar="DATA", help="raw data root holding train/")
    e.add_argument("out", type=Path, metavar="OUT", help="folder for the PNGs and summary.md")
    e.add_argument("--age-thresholds", type=int, nargs=2, default=[30, 60], metavar=("LOW", "HIGH"),
                   help="age band thresholds drawn on the histogram (default 30 60)")
    e.add_argument("--corrections", default="default", metavar="FILE|none|default",
                   help="label corrections applied before counting, as for `maskds build` (default: default)")
    e.set_defaults(func=_eda)


def _add_score(sub) -> None:
    c = sub.add_parser("score", help="score a submission against answers",
                       description="18-class macro F1, per-head macro F1, accuracy and confusion matrix.")
    c.add_argument("submission", type=Path, metavar="SUBMISSION", help="CSV with ImageID,ans")
    c.add_argument("answers", type=Path, metavar="ANSWERS", help="CSV with ImageID,ans (the truth)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    c.add_argument("--plot", type=Path, default=None, metavar="FILE", help="write the confusion matrix PNG")
    c.set_defaults(func=_score)


def _add_oof(sub) -> None:
    o = sub.add_parser("oof", help="cross-validated score of a run from its folds' out-of-fold predictions",
                       description="Join the oof.csv every fold writes (its best EMA epoch's probabilities on "
                       "its own validation persons) and score them: with every fold trained, an estimate of "
                       "the held-out score for every training person.")
    o.add_argument("run", type=Path, metavar="RUN", help="run folder with fold<k>/oof.csv (runs/<name>)")
    o.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    o.add_argument("--plot", type=Path, default=None, metavar="FILE", help="write the confusion matrix PNG")
    o.add_argument("--gallery", type=Path, default=None, metavar="PNG",
                   help="write the most confident mistakes as thumbnails, grouped by person (label errors "
                   "found there go into your corrections file)")
    o.add_argument("--top", type=int, default=36, help="mistakes shown in the gallery (default 36)")
    o.add_argument("--tune-decision", nargs="?", const="class", default=None, choices=["head", "class", "age"],
                   help="fit a decision for macro F1 on these predictions and save RUN/decision.json, which "
                   "infer.py then applies (prints the score before and after): weights on the class "
                   "probabilities, one per class (class, the default: 18 numbers) or per head value (head: 8), "
                   "or, for a regression age head, the two ages where the age bands are cut (age)")
    o.set_defaults(func=_oof)


def _add_tune(sub) -> None:
    t = sub.add_parser("tune", help="search train-config values with Optuna, each trial a real training run",
                       description="Optuna study over the keys of --space, each trial `train.py --config CONFIG "
                       "OVERRIDES <its values>` on the folds the config names, pruned on each epoch's EMA "
                       "validation macro F1 and scored by its out-of-fold macro F1. Run the same command again to "
                       "resume; run it on several machines with one --storage to share the study. Prints the best "
                       "trial's values as key=value and writes them as a config file.",
                       epilog="space YAML: `lr: {low: 1.0e-4, high: 3.0e-3, log: true}` (float or int keys), "
                       "`augment: [light, medium]` (choices, any key). Storage: sqlite:///tune.db (one machine), "
                       "postgresql://... or journal:/shared/tune.log (several).")
    t.add_argument("--config", default=None, help="base train config YAML (e.g. configs/demo.yaml)")
    t.add_argument("--space", type=Path, required=True, help="search space YAML")
    t.add_argument("--trials", type=int, required=True, help="finished (complete or pruned) trials the study needs")
    t.add_argument("--study", required=True, help="study name (also names the trials' run folders)")
    t.add_argument("--storage", required=True, help="sqlite:///tune.db, another RDB URL, or journal:PATH")
    t.add_argument("--runs-dir", type=Path, default=None, help="where trial runs go (default tune_runs/STUDY)")
    t.add_argument("--launch", default=None, metavar="ACCELERATE_CONFIG",
                   help="run each trial under `accelerate launch --config_file` this (default: plain python)")
    t.add_argument("--out", type=Path, default=Path("best.yaml"), help="best config file to write (default best.yaml)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="train-config overrides every trial shares")
    t.set_defaults(func=_tune)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"maskds {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskds {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
