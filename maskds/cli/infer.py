"""`infer.py`: every fold's best weights x TTA views, soft-voted into submission.csv and a probabilities file."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from maskds.config.plan import parse_models
from maskds.core.errors import UserError
from maskds.core.labels import HEAD_NAMES
from maskds.core.probabilities import Probs, to_frame
from maskds.evaluation.decision import DECISION_FILE, Decision, load_decision
from maskds.inference.assemble import assemble, check_learned, parse_heads
from maskds.inference.inputs import find_checkpoints, read_info
from maskds.inference.models import Member, check_heads, load_member, make_accelerator
from maskds.inference.predict import predict_runs
from maskds.inference.tta import TTA_PRESETS, VIEWS, parse_tta
from maskds.inference.voting import answers, combine_runs, read_probs, write_atomic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="infer.py",
        description="Predict an eval folder with every fold of one or more runs (soft voting), write "
        "the submission and a probabilities file. Model, head, image size and normalization come from "
        "each checkpoint. Also runs as `accelerate launch infer.py ...` (each process takes a shard).",
        epilog="Soft voting: within a run, each head's probabilities are averaged over folds and TTA views "
        "(single-head runs: the 18-way probabilities) and class = mask x gender x age of those averages; "
        "runs are combined by the weighted mean of their probabilities; the answer is the argmax of the "
        "combined 18-class probabilities. With --head, each head comes from its own source (soft-voted over "
        "its folds) and class = the product of the assembled heads. The probabilities file holds exactly what "
        "was voted on.",
    )
    p.add_argument("--run", type=Path, action="append", default=None, metavar="RUN",
                   help="run folder with fold<k>/best.safetensors, or a probabilities CSV written by "
                   "infer.py; repeat to ensemble runs")
    p.add_argument("--head", action="append", default=None, metavar="HEADS=RUN",
                   help="instead of --run: take these heads (comma-separated of mask, gender, age) from this run "
                   "folder or probabilities CSV, e.g. --head mask,gender=runs/base --head age=runs/age; "
                   "every head exactly once (per-head specialists: train.py heads=[age])")
    p.add_argument("--weights", type=float, nargs="+", default=None, metavar="W",
                   help="one weight per --run for the ensemble (default: equal)")
    p.add_argument("--data", type=Path, required=True, metavar="DATA/eval",
                   help="eval folder holding info.csv and images/")
    p.add_argument("--out", type=Path, required=True, metavar="CSV", help="submission file to write")
    p.add_argument("--probs", type=Path, default=None, metavar="CSV",
                   help="probabilities file to write (default: OUT with suffix .probs.csv)")
    presets = ", ".join(f"{name}={'+'.join(views)}" for name, views in TTA_PRESETS.items())
    p.add_argument("--tta", default="none", metavar="VIEWS",
                   help=f"test-time augmentation, averaged: a preset ({presets}) or comma-separated views "
                   f"of {', '.join(VIEWS)} (zoom/shrink: 1.1x / 0.9x about the centre)")
    p.add_argument("--folds", nargs="+", default=None, metavar="K",
                   help="only these models of each run: fold numbers and full (the folds=full model), e.g. "
                   "--folds 0,1,full (default: every fold<k>, and full/)")
    p.add_argument("--decision", type=Path, default=None, metavar="JSON",
                   help="a tuned decision (class weights, or a regression age head's band cuts) to apply; "
                   "default: the run's decision.json when "
                   "one run is predicted and it has one (`maskds oof RUN --tune-decision` writes it)")
    p.add_argument("--no-tuned-decision", action="store_true",
                   help="answer with the plain argmax even when the run has a decision.json")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch and process (default: 256 on a GPU, 64 on the CPU)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers per process (default: the CPU count, at most 16)")
    p.add_argument("--precision", choices=["auto", "no", "bf16", "fp16"], default="auto",
                   help="autocast precision; auto = the accelerate launch config's, else bf16 on a GPU, else none")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each model (a GPU pays it back on large eval sets; the first batch waits)")
    p.add_argument("--fold-bn", choices=["auto", "on", "off"], default="auto",
                   help="fold each BatchNorm into the convolution before it (the same function, checked on a "
                   "random batch at load); auto: with --compile or on the CPU, where it is faster")
    a = p.parse_args(argv)
    if (a.batch_size is not None and a.batch_size < 1) or (a.num_workers is not None and a.num_workers < 0):
        p.error("--batch-size must be >= 1 and --num-workers >= 0")
    if a.folds is not None:
        try:
            a.folds = parse_models(",".join(a.folds))
        except ValueError as err:
            p.error(f"--folds: {err}")
    return a


def check_args(a: argparse.Namespace) -> Path:
    """Checks that need no files read; returns the probabilities file's path."""
    parse_tta(a.tta)
    if (a.run is None) == (a.head is None):
        raise UserError("give --run RUN (one run, or several to ensemble) or --head HEADS=RUN for every head, "
                        + ("not both" if a.run else "one of them"))
    if a.head is not None and a.weights is not None:
        raise UserError("--weights weighs the runs of a --run ensemble; with --head each head comes from one source")
    if a.weights is not None:
        if len(a.weights) != len(a.run):
            raise UserError(f"--weights: {len(a.weights)} weight(s) for {len(a.run)} --run(s); give one per run")
        if min(a.weights) < 0 or sum(a.weights) <= 0:
            raise UserError(f"--weights must be >= 0 with a positive sum, got {a.weights}")
    probs = a.probs or a.out.with_name(a.out.stem + ".probs.csv")
    if a.out.is_dir() or probs.resolve() == a.out.resolve():
        raise UserError(f"--out {a.out} must be a file path distinct from the probabilities file {probs}")
    return probs


def main(argv: list[str] | None = None) -> int:
    """Entry point of infer.py; returns the exit status (2 for bad input, nothing written)."""
    try:
        args = parse_args(argv)
        probs_path = check_args(args)
        return run_inference(args, probs_path)
    except UserError as err:
        if int(os.environ.get("RANK", "0")) == 0:  # every process finds it; one message is enough
            print(f"infer.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infer.py: interrupted", file=sys.stderr)
        return 130


def run_inference(args: argparse.Namespace, probs_path: Path) -> int:
    """Check every input, predict (sharded across processes), soft-vote, write both files on the main process."""
    accelerator = make_accelerator(args.precision)
    on_gpu = accelerator.device.type == "cuda"
    batch_size = args.batch_size or (256 if on_gpu else 64)
    workers = args.num_workers if args.num_workers is not None else min(16, os.cpu_count() or 1)
    ids, paths = read_info(args.data)
    heads = parse_heads(args.head) if args.head else None
    given = [h.source for h in heads] if heads else args.run
    # A --run that is a file is a probabilities CSV from an earlier infer.py: ensembled as it is.
    sources = [r if r.is_file() else find_checkpoints(r, args.folds) for r in given]
    files = {i: read_probs(src, ids) for i, src in enumerate(sources) if isinstance(src, Path)}
    members = [load_member(i, k, p, accelerator.device, args.compile, args.fold_bn)
               for i, src in enumerate(sources) if not isinstance(src, Path) for k, p in src]
    check_heads(members)
    check_learned(members, [h.heads for h in heads] if heads else [HEAD_NAMES] * len(given), given)
    rule, decision = choose_decision(args, members)
    if rule is not None and rule.kind == "age_thresholds":  # on the run(s) that answer for the age
        age_runs = {i for i, h in enumerate(heads) if "age" in h.heads} if heads else set(range(len(given)))
        members = with_age_thresholds(members, rule.age_thresholds, decision, age_runs)
    weights = rule.weights if rule is not None else None

    views = parse_tta(args.tta)
    start = time.perf_counter()
    predicted = (predict_runs(members, paths, accelerator, batch_size, workers, views, pad=args.compile)
                 if members else {})
    seconds = time.perf_counter() - start
    if accelerator.is_main_process:
        runs = [files[i] if i in files else predicted[i] for i in range(len(sources))]
        voted = assemble(runs, heads) if heads else combine_runs(runs, args.weights)
        write_outputs(ids, voted, args.out, probs_path, weights)
        if decision is not None:
            print(f"applied the tuned decision {decision} ({rule.describe()}; --no-tuned-decision for plain argmax)")
        if members:
            print(f"{len(ids)} images x {len(members)} model(s) x {len(views)} TTA view(s) in {seconds:.1f}s: "
                  f"{len(ids) / max(seconds, 1e-9):.1f} images/s on {accelerator.num_processes} process(es)")
        print(f"wrote {args.out} and {probs_path}")
    accelerator.wait_for_everyone()
    # Ended here, not by interpreter exit: gloo's threads torn down at exit can abort a process (SIGABRT).
    accelerator.state.destroy_process_group()
    return 0


def choose_decision(args: argparse.Namespace, members: list) -> tuple[Decision | None, Path | None]:
    """The decision to answer with, and its file: --decision, else the one run's decision.json.

    A decision is checked against the heads of the run it is applied to (one run predicted); an
    ensemble of several runs answers with the plain argmax unless --decision names a file.
    """
    if args.no_tuned_decision or (args.head and args.decision is None):
        return None, None
    if args.head:  # heads assembled from several runs: the file is applied as given
        return load_decision(args.decision), args.decision
    heads = {(m.spec.head, m.spec.age_head) for m in members}
    one_run = len(args.run) == 1 and args.run[0].is_dir()
    path = args.decision or (args.run[0] / DECISION_FILE if one_run else None)
    if path is None or (args.decision is None and not path.is_file()):
        return None, None
    held = dict(zip(("head", "age_head"), next(iter(heads)))) if len(heads) == 1 else None
    return load_decision(path, held, args.run[0] if one_run else None), path


def with_age_thresholds(members: list[Member], cuts: tuple[int, int], path: Path, runs: set[int]) -> list[Member]:
    """The members, the regression age heads of `runs` (those answering for the age) cut at `cuts` (a tuned
    decision's): their band probabilities, and so what is voted and written, are read at those ages."""
    def cut(m: Member) -> bool:
        return m.run in runs and m.spec.age_head == "regression"
    if not any(cut(m) for m in members):
        raise UserError(f"decision file {path} cuts a regression age head's bands, and no model predicting the "
                        "age here has one; pass --no-tuned-decision or another --decision")
    return [dataclasses.replace(m, spec=dataclasses.replace(m.spec, age_thresholds=cuts)) if cut(m) else m
            for m in members]


def write_outputs(ids: list[str], probs: Probs, out: Path, probs_path: Path, weights: np.ndarray | None = None) -> None:
    """Probabilities file (the soft vote: a tuned age decision's cuts included, class weights not), then the
    submission (info.csv's rows and order, `ans` = argmax of the class probabilities, times the tuned
    decision's class weights if any), both atomic."""
    write_atomic(to_frame(ids, probs), probs_path, float_format="%.8g")
    write_atomic(pd.DataFrame({"ImageID": ids, "ans": answers(probs, weights)}), out)
