"""`maskds tune`: space checks, a study of real (tiny) training runs, kill + resume, two processes sharing one study."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from maskds.cli.main import main

from train_helpers import ROOT, env

TINY = ["folds=[0]", "epochs=1", "model=test_efficientnet", "pretrained=none", "image_size=[64,48]",
        "num_workers=0", "batch_size=16"]
SPACE = "lr: {low: 1e-4, high: 3e-3, log: true}\naugment: [light, medium]\n"


def tune_args(tmp_path, cache, study="s", trials=2, space=SPACE) -> list[str]:
    (tmp_path / "space.yaml").write_text(space)
    return ["tune", "--config", str(ROOT / "configs/demo.yaml"), "--space", str(tmp_path / "space.yaml"),
            "--trials", str(trials), "--study", study, "--storage", f"sqlite:///{tmp_path / 'tune.db'}",
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "best.yaml"), f"cache={cache}", *TINY]


def run_tune(args: list[str], **kwargs):
    return subprocess.Popen([sys.executable, "-m", "maskds.cli", *args], cwd=ROOT, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def load(tmp_path, study="s"):
    import optuna

    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'tune.db'}")


@pytest.mark.parametrize("space, named", [
    ("lerning_rate: {low: 1e-4, high: 1e-3}\n", "'lerning_rate' is not a train config key"),
    ("lr: {low: 1e-3, high: 1e-4}\n", "lr: the range [0.001, 0.0001] is empty"),
    ("augment: [light, wild]\n", "augment='wild' is not a valid value"),
    ("epochs: {low: 1, high: 2.5}\n", "epochs is an integer key"),
    ("name: [a, b]\n", "'name' is not a train config key a trial may choose"),
    ("lr: []\n", "lr: give a non-empty list"),
])
def test_a_bad_space_is_refused_naming_the_key_before_any_study_exists(tmp_path, tiny_cache, capsys, space, named):
    assert main(tune_args(tmp_path, tiny_cache, space=space)) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "tune.db").exists() and not (tmp_path / "runs").exists()


def test_a_space_key_also_fixed_by_an_override_is_refused(tmp_path, tiny_cache, capsys):
    assert main([*tune_args(tmp_path, tiny_cache), "lr=1e-3"]) == 2
    assert "lr: both fixed by an override and searched" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_study_resumes_and_finishes_with_the_killed_trial_failed(tmp_path, tiny_cache):
    from optuna.trial import TrialState

    args = tune_args(tmp_path, tiny_cache, trials=2)
    proc = run_tune(args)
    deadline = time.time() + 120
    while not (tmp_path / "runs" / "s-trial0" / "fold0").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # a scheduler preempting the job mid-trial
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    assert [t.state for t in load(tmp_path).trials] == [TrialState.FAIL]
    resumed = run_tune(args)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out[-3000:]
    states = [t.state for t in load(tmp_path).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    best = load(tmp_path).best_trial
    assert f"lr={best.params['lr']}" in out and f"augment={best.params['augment']}" in out
    text = (tmp_path / "best.yaml").read_text()
    assert f"augment: {best.params['augment']}" in text and "epochs: 1" in text
    again = run_tune(args)  # the study is finished: nothing more runs, the best is written again
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 0 and "trial 3:" not in out and "wrote" in out
    assert len(load(tmp_path).trials) == 3


@pytest.mark.slow
def test_two_processes_on_one_storage_share_the_study(tmp_path, tiny_cache):
    from optuna.trial import TrialState

    args = tune_args(tmp_path, tiny_cache, trials=4)
    first = run_tune(args)
    time.sleep(3)  # the first creates the study; the second joins it
    second = run_tune(args)
    outs = [p.communicate(timeout=400)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    trials = load(tmp_path).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 4 and len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both processes ran trials of the one study


def test_each_launched_trial_gets_a_free_port_of_its_own(tmp_path):
    import socket

    from maskds.tuning.tune import TuneJob, trial_command

    job = TuneJob(None, [], [], tmp_path, "s", launch=str(ROOT / "accelerate_configs/cpu_2proc.yaml"))
    cmd = trial_command(job, ["epochs=1"])
    port = int(cmd[cmd.index("--main_process_port") + 1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free (not accelerate's default 29500, which another study's trial holds)
    assert cmd.index("--main_process_port") < cmd.index(str(ROOT / "train.py"))


def test_space_values_are_checked_with_the_base_config_and_step_options(tmp_path, tiny_cache, capsys):
    args = tune_args(tmp_path, tiny_cache, space="scheduler: [cosine, step]\n")
    assert main(args) == 2 and "decay_epochs" in capsys.readouterr().err  # step needs decay_epochs...
    from maskds.tuning.space import load_space

    space = load_space(tmp_path / "space.yaml", str(ROOT / "configs/demo.yaml"), ["decay_epochs=1"])
    assert space[0].choices == ("cosine", "step")  # ...which the base overrides may give
    for space in ("lr: {low: 1e-4, high: 1e-3, step: 1}\n", "epochs: {low: 1, high: 8, log: true, step: 2}\n"):
        assert main(tune_args(tmp_path, tiny_cache, space=space)) == 2
        assert "step" in capsys.readouterr().err


# A stand-in for train.py: writes every fold's metrics.jsonl (EMA F1 = fold + epoch / 10) at once.
FAKE_TRAIN = """
import json, pathlib, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
for fold in (0, 1):
    d = pathlib.Path(args["output_dir"]) / args["name"] / f"fold{fold}"
    d.mkdir(parents=True)
    lines = [{"epoch": e, "ema": {"macro_f1": fold + e / 10}} for e in range(int(args.get("epochs", 3)))]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in lines))
    time.sleep(0.05)
"""


class FakeTrial:
    """The part of an Optuna trial `run_trial` uses: fixed params, the reports kept."""

    def __init__(self, number: int, params: dict):
        self.number, self.params, self.user_attrs, self.reports = number, params, {}, []

    def suggest_categorical(self, key, choices):
        return self.params[key]

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return False


@pytest.fixture
def fake_train(monkeypatch):
    """run_trial launches FAKE_TRAIN instead of train.py (and every trial scores 0.5); returns the launches."""
    from maskds.tuning import tune

    launched = []

    def command(job, overrides):
        launched.append(overrides)
        return [sys.executable, "-c", FAKE_TRAIN, *overrides]

    monkeypatch.setattr(tune, "trial_command", command)
    monkeypatch.setattr(tune, "oof_macro_f1", lambda run_dir, heads=None: 0.5)
    return launched


def test_a_step_means_the_same_fold_and_epoch_in_trials_of_different_epochs(tmp_path, fake_train):
    from maskds.tuning.space import parse_param
    from maskds.tuning.tune import TuneJob, run_trial

    space = [parse_param("epochs", [2, 4], "space")]
    job = TuneJob(str(ROOT / "configs/demo.yaml"), [], space, tmp_path, "s")
    short, long = FakeTrial(0, {"epochs": 2}), FakeTrial(1, {"epochs": 4})
    for trial in (short, long):
        assert run_trial(trial, job) == 0.5
    steps = {f1: step for step, f1 in long.reports}  # f1 = fold + epoch / 10
    assert short.reports == [(steps[f1], f1) for f1 in (0.0, 0.1, 1.0, 1.1)]
    assert steps[1.0] == 4  # fold 1's first epoch comes after the longest trial's 4 epochs of fold 0


def test_an_invalid_combination_fails_its_trial_before_anything_is_launched(tmp_path, fake_train):
    from maskds.tuning.space import parse_param
    from maskds.tuning.tune import TrialFailed, TuneJob, run_trial

    space = [parse_param("head", ["multihead", "single"], "space"),
             parse_param("age_head", ["bands", "regression"], "space")]
    job = TuneJob(None, [], space, tmp_path, "s")  # the defaults: head=multihead, age_head=bands
    trial = FakeTrial(0, {"head": "single", "age_head": "regression"})
    with pytest.raises(TrialFailed, match="age_head: 'regression' needs head=multihead"):
        run_trial(trial, job)
    assert fake_train == [] and not (tmp_path / "s-trial0").exists()
    assert "needs head=multihead" in trial.user_attrs["invalid"]


def test_a_study_goes_on_past_invalid_combinations_which_do_not_count(tmp_path, fake_train):
    import optuna
    from optuna.trial import TrialState

    from maskds.tuning.space import parse_param
    from maskds.tuning.tune import tune

    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    space = [parse_param("head", ["multihead", "single"], "space"),
             parse_param("age_head", ["bands", "regression"], "space")]
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for head, age in (("single", "regression"), ("multihead", "regression"), ("single", "regression"),
                      ("single", "bands")):
        study.enqueue_trial({"head": head, "age_head": age})
    tune(None, [], space, 2, "s", storage, tmp_path / "runs", None,
         tmp_path / "best.yaml")
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "needs head=multihead" in trials[0].user_attrs["invalid"]
    assert len(fake_train) == 2 and (tmp_path / "best.yaml").is_file()


def test_all_combinations_invalid_stops_the_study_with_the_reason(tmp_path, fake_train):
    from maskds.core.errors import UserError
    from maskds.tuning.space import parse_param
    from maskds.tuning.tune import tune

    space = [parse_param("head", ["single"], "space"), parse_param("age_head", ["regression"], "space")]
    with pytest.raises(UserError, match="no valid config.*needs head=multihead"):
        tune(None, [], space, 2, "s", f"sqlite:///{tmp_path / 'tune.db'}", tmp_path / "runs",
             None, tmp_path / "best.yaml")
    assert fake_train == []
