"""`maskds tune`: an Optuna study over train-config keys, each trial a real `train.py` run scored out of fold.

Each trial runs `train.py` (under `accelerate launch` when a launch config is given) as a child process
on the chosen folds, reports every epoch's EMA validation macro F1 to Optuna as it lands in
metrics.jsonl (the median pruner stops trials that trail), and is scored by the macro F1 of its
folds' out-of-fold predictions. The study lives in the storage: `sqlite:///tune.db` on one machine,
an RDB URL (PostgreSQL, MySQL) or `journal:/shared/tune.log` (Optuna's journal file) for several
machines; any number of `maskds tune` processes pointed at one storage share the study, and running
the same command again resumes it. A trial whose process is interrupted is marked failed (its run
folder is kept); on RDB storages a heartbeat also fails the trials of a process that was killed outright.
A trial whose values combine into an invalid config (each value is checked alone up front) is failed
before anything is launched, with the reason in its `invalid` attribute, and does not count toward
`--trials`.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from maskds.config.keys import TrainConfig, load_config, save_config
from maskds.config.plan import FULL
from maskds.core import metrics
from maskds.core.console import console, show
from maskds.core.errors import UserError
from maskds.core.labels import HEAD_NAMES
from maskds.evaluation.oof import class_probs, read_oof
from maskds.tuning.epochs import EpochReader, most_epochs
from maskds.tuning.space import Param, as_override
from maskds.tuning.study import check_study

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 20  # RDB storages: a trial silent for 3 heartbeats is failed by the next process to start one
INVALID_IN_A_ROW = 50  # draws of invalid combinations in a row that stop a study (its space has few valid ones)


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


class InvalidTrial(TrialFailed):
    """The trial's values together make an invalid config: failed before launch, not counted toward --trials."""


class Budget:
    """An Optuna callback that stops this process's study after `n` trials that ran (complete, pruned or
    failed in train.py); invalid combinations do not count, but INVALID_IN_A_ROW of them in a row stop it."""

    def __init__(self, n: int):
        self.left, self.invalid_in_a_row, self.last_invalid = n, 0, ""

    def __call__(self, study, trial) -> None:
        if "invalid" in trial.user_attrs:
            self.invalid_in_a_row, self.last_invalid = self.invalid_in_a_row + 1, trial.user_attrs["invalid"]
            if self.invalid_in_a_row >= INVALID_IN_A_ROW:
                study.stop()
            return
        self.invalid_in_a_row, self.left = 0, self.left - 1
        if self.left <= 0:
            study.stop()


def open_storage(url: str):
    """An Optuna storage from `sqlite:///...` / other RDB URLs (with a heartbeat) or `journal:PATH`."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.split(":", 1)[1]))
    if "://" not in url:
        raise UserError(f"--storage {url!r}: give an RDB URL such as sqlite:///tune.db or journal:PATH")
    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S)


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trial_command(job: TuneJob, overrides: list[str]) -> list[str]:
    """train.py's command line; under `accelerate launch`, with a free port of its own for the processes
    to meet on (two studies on one machine would otherwise both take accelerate's default port)."""
    train = str(ROOT / "train.py")
    config = ["--config", job.config] if job.config else []
    if job.launch:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", job.launch,
                "--main_process_port", str(free_port()), train, *config, *overrides]
    return [sys.executable, train, *config, *overrides]


def trial_overrides(job: TuneJob, params: dict, name: str) -> list[str]:
    """The base overrides, then the trial's values (as YAML), then where its run goes."""
    chosen = [as_override(k, v) for k, v in params.items()]
    return [*job.overrides, *chosen, f"output_dir={job.runs_dir}", f"name={name}", "resume=none", "log_with=none"]


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


def trial_config(trial, job: TuneJob, overrides: list[str]) -> TrainConfig:
    """The trial's config, or InvalidTrial (the reason kept in the trial's `invalid` attribute) when its
    values together make an invalid one, e.g. head=single with age_head=regression."""
    try:
        return load_config(job.config, overrides)
    except UserError as err:
        reason = "; ".join(err.problems) if err.problems else str(err)
        trial.set_user_attr("invalid", reason)
        show(f"[yellow]trial {trial.number}: not run, its values make an invalid config: {reason}[/]")
        raise InvalidTrial(reason) from None


def run_trial(trial, job: TuneJob) -> float:
    """One training run: report each epoch's EMA F1 (pruning on it), then score it out of fold."""
    import optuna

    params = {p.key: p.suggest(trial) for p in job.space}
    name = f"{job.study}-trial{trial.number}"
    run_dir = job.runs_dir / name
    overrides = trial_overrides(job, params, name)
    config = trial_config(trial, job, overrides)
    trial.set_user_attr("run", str(run_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    run_dir.mkdir(parents=True, exist_ok=True)
    show(f"[bold]trial {trial.number}[/]: {' '.join(overrides[len(job.overrides):len(job.overrides) + len(params)])}")
    with open(run_dir.parent / f"{name}.log", "w") as log:
        proc = subprocess.Popen(trial_command(job, overrides), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,  # its own process group: stopped as a whole
                                preexec_fn=_die_with_parent)
        try:
            reader = EpochReader(run_dir, most_epochs(job.config, job.overrides, job.space))
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
        return oof_macro_f1(run_dir, config.heads)
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
    if load_config(config, overrides).folds == FULL:  # the base config is valid before any study is opened
        raise UserError("folds=full: a trial is scored on its out-of-fold predictions, which folds=full has none "
                        "of; tune on validation folds (e.g. folds=[0]), then train folds=full with what won")
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
        budget = Budget(remaining)
        study.optimize(lambda t: run_trial(t, job), catch=(TrialFailed,),
                       callbacks=[budget, optuna.study.MaxTrialsCallback(trials, states=finished)])
        if budget.invalid_in_a_row >= INVALID_IN_A_ROW:
            raise UserError(f"study {study_name!r}: {INVALID_IN_A_ROW} trials in a row drew values that make no "
                            f"valid config (last: {budget.last_invalid}); change --space so its values combine")
    summary(study)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UserError(f"study {study_name!r}: no trial has completed yet; see the logs in {job.runs_dir}")
    best = study.best_trial
    line = write_best(job, best.params, out)
    print(f"best trial {best.number}: out-of-fold macro F1 {best.value:.4f} ({best.user_attrs.get('run')})")
    print(line)
    print(f"wrote {out}")
