"""`maskds tune`: an Optuna study over train-config keys, each trial a real `train.py` run scored out of fold.

Each trial runs `train.py` (under `accelerate launch` when a launch config is given) as a child process
on the chosen folds, reports every epoch's EMA validation macro F1 to Optuna as it lands in
metrics.jsonl (the median pruner stops trials that trail), and is scored by the macro F1 of its
folds' out-of-fold predictions. The study lives in the storage: `sqlite:///tune.db` on one machine,
an RDB URL (PostgreSQL, MySQL) or `journal:/shared/tune.log` (Optuna's journal file) for several
machines; any number of `maskds tune` processes pointed at one storage share the study, and running
the same command again resumes it. A trial whose process is interrupted is marked failed (its run
folder is kept); on RDB storages a heartbeat also fails the trials of a process that was killed outright.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.console import console, show
from ..core.errors import UserError
from ..core.labels import HEAD_NAMES
from ..evaluation import metrics
from ..evaluation.oof import class_probs, read_oof
from ..training.config import TrainConfig, load_config, save_config
from .space import Param, as_override, describe

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 20  # RDB storages: a trial silent for 3 heartbeats is failed by the next process to start one


@dataclass(frozen=True)
class TuneJob:
    """What every trial shares: the base config and overrides, the space, where runs go and how they launch."""
    config: str | None
    overrides: list[str]
    space: list[Param]
    runs_dir: Path
    study: str
    launch: str | None = None


class TrialFailed(Exception):
    """train.py exited with an error: the trial is marked failed and the study goes on."""


def open_storage(url: str):
    """An Optuna storage from `sqlite:///...` / other RDB URLs (with a heartbeat) or `journal:PATH`."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.split(":", 1)[1]))
    if "://" not in url:
        raise UserError(f"--storage {url!r}: give an RDB URL such as sqlite:///tune.db or journal:PATH")
    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S)


def trial_command(job: TuneJob, overrides: list[str]) -> list[str]:
    train = str(ROOT / "train.py")
    config = ["--config", job.config] if job.config else []
    if job.launch:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", job.launch, train, *config,
                *overrides]
    return [sys.executable, train, *config, *overrides]


def trial_overrides(job: TuneJob, params: dict, name: str) -> list[str]:
    """The base overrides, then the trial's values (as YAML), then where its run goes."""
    chosen = [as_override(k, v) for k, v in params.items()]
    return [*job.overrides, *chosen, f"output_dir={job.runs_dir}", f"name={name}", "resume=none", "log_with=none"]


class EpochReader:
    """New epochs of a run as its folds write them: (step, EMA macro F1), step = the fold's place in
    training order x epochs + epoch, so every trial reports fold k's epoch e at the same step (what the
    pruner compares) whatever the fold ids and their order."""

    def __init__(self, run_dir: Path, epochs: int):
        self.run_dir, self.epochs = run_dir, epochs
        self.seen: dict[Path, int] = {}    # metrics file -> lines reported, in the order folds started

    def new(self) -> list[tuple[int, float]]:
        out = []
        started = [p for p in self.run_dir.glob("fold*/metrics.jsonl") if p not in self.seen]
        for path in sorted(started, key=lambda p: p.stat().st_mtime):  # train.py runs one fold at a time
            self.seen[path] = 0
        for place, (path, done) in enumerate(list(self.seen.items())):
            lines = [ln for ln in path.read_text().splitlines() if ln.strip().endswith("}")]
            for line in lines[done:]:
                record = json.loads(line)
                ema = record["ema"]  # "score": what picks the epoch (older runs: the 18-class macro F1)
                out.append((place * self.epochs + int(record["epoch"]), float(ema.get("score", ema["macro_f1"]))))
            self.seen[path] = len(lines)
        return out


def _die_with_parent() -> None:
    """In the child, Linux only: SIGTERM when `maskds tune` dies, even killed outright, so no training
    run is left on the machine without a study to report to."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def oof_macro_f1(run_dir: Path, heads=HEAD_NAMES) -> float:
    """The 18-class macro F1 of every fold's out-of-fold predictions together (a specialist trial's
    heads: their mean macro F1, `metrics.selection_score`)."""
    oof = read_oof(run_dir)
    return metrics.selection_score(metrics.scores(oof["truth"].to_numpy(), class_probs(oof).argmax(1)), heads)


def run_trial(trial, job: TuneJob) -> float:
    """One training run: report each epoch's EMA F1 (pruning on it), then score it out of fold."""
    import optuna

    params = {p.key: p.suggest(trial) for p in job.space}
    name = f"{job.study}-trial{trial.number}"
    run_dir = job.runs_dir / name
    overrides = trial_overrides(job, params, name)
    trial.set_user_attr("run", str(run_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    run_dir.mkdir(parents=True, exist_ok=True)
    show(f"[bold]trial {trial.number}[/]: {' '.join(overrides[len(job.overrides):len(job.overrides) + len(params)])}")
    with open(run_dir.parent / f"{name}.log", "w") as log:
        proc = subprocess.Popen(trial_command(job, overrides), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,  # its own process group: stopped as a whole
                                preexec_fn=_die_with_parent)
        try:
            trial_config = load_config(job.config, overrides)
            reader = EpochReader(run_dir, trial_config.epochs)
            while True:
                done = proc.poll() is not None
                for step, f1 in reader.new():
                    trial.report(f1, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"validation F1 {f1:.4f} at step {step}")
                if done:
                    break
                time.sleep(1.0)
        finally:
            _stop(proc)
    if proc.returncode != 0:
        raise TrialFailed(f"train.py exited with {proc.returncode}; see {run_dir.parent / f'{name}.log'}")
    try:
        return oof_macro_f1(run_dir, trial_config.heads)
    except UserError as err:
        raise TrialFailed(str(err)) from None


def best_config(job: TuneJob, params: dict) -> TrainConfig:
    """The base config with the best trial's values."""
    extra = [as_override(k, v) for k, v in params.items()]
    return load_config(job.config, [*job.overrides, *extra])


def write_best(job: TuneJob, params: dict, out: Path) -> str:
    """Write the best config to `out` (atomically); return its `key=value` line."""
    save_config(best_config(job, params), out)
    return " ".join(as_override(k, v) for k, v in params.items())


def check_study(study, job: TuneJob) -> None:
    """A study keeps one space and base config: a resume with others would mix incomparable trials."""
    mine = {"space": describe(job.space), "base": json.dumps([job.config, job.overrides])}
    for key, value in mine.items():
        held = study.user_attrs.get(key)
        if held is None:
            study.set_user_attr(key, value)
        elif held != value:
            what = "search space" if key == "space" else "base config"
            raise UserError(f"study {job.study!r} was started with another {what}; use the same --space, "
                            "--config and overrides, or another --study name")


def summary(study) -> None:
    from rich.table import Table

    table = Table(title=f"study {study.study_name}", title_justify="left")
    for col in ("trial", "state", "OOF macro F1", "params"):
        table.add_column(col)
    for t in study.trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        table.add_row(str(t.number), t.state.name, value, " ".join(f"{k}={v}" for k, v in t.params.items()))
    console.print(table)


def tune(config: str | None, overrides: list[str], space: list[Param], trials: int, study_name: str,
         storage_url: str, runs_dir: Path | None, launch: str | None, out: Path) -> None:
    """Run (or resume, or join) the study until it has `trials` finished (complete or pruned) trials,
    then write the best trial's config to `out` and print its `key=value` line."""
    import optuna
    from optuna.trial import TrialState

    if trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    if launch is not None and not Path(launch).is_file():
        raise UserError(f"--launch {launch} does not exist; pass a file of accelerate_configs/")
    fixed = sorted({o.partition("=")[0] for o in overrides} & {p.key for p in space})
    if fixed:
        raise UserError(f"{', '.join(fixed)}: both fixed by an override and searched by the space; drop one")
    load_config(config, overrides)  # the base config is valid before any study is opened
    job = TuneJob(config, overrides, space, runs_dir or Path("tune_runs") / study_name, study_name, launch)
    try:
        storage = open_storage(storage_url)
        study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    except (ImportError, ValueError, OSError) as err:
        raise UserError(f"--storage {storage_url}: cannot open it ({err})") from None
    except Exception as err:  # SQLAlchemy's errors (a missing folder, a refused connection)
        raise UserError(f"--storage {storage_url}: cannot open it ({type(err).__name__}: {err})") from None
    check_study(study, job)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining > 0:  # at most `remaining` here; another process on the storage may finish the study first
        study.optimize(lambda t: run_trial(t, job), n_trials=remaining, catch=(TrialFailed,),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)])
    summary(study)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UserError(f"study {study_name!r}: no trial has completed yet; see the logs in {job.runs_dir}")
    best = study.best_trial
    line = write_best(job, best.params, out)
    print(f"best trial {best.number}: out-of-fold macro F1 {best.value:.4f} ({best.user_attrs.get('run')})")
    print(line)
    print(f"wrote {out}")
