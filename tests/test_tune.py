"""`maskds tune`: space checks, a study of real (tiny) training runs, kill + resume, two processes sharing one study."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from maskds.cli import main

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


def test_epochs_are_reported_at_steps_of_the_folds_training_order(tmp_path):
    import json as js

    from maskds.tuning.tune import EpochReader

    def write(fold, epochs):
        d = tmp_path / f"fold{fold}"
        d.mkdir(exist_ok=True)
        (d / "metrics.jsonl").write_text("".join(js.dumps({"epoch": e, "ema": {"macro_f1": f}}) + "\n"
                                                 for e, f in epochs))

    reader = EpochReader(tmp_path, epochs=2)
    write(3, [(0, 0.1)])  # folds=[3, 0]: fold 3 trains first
    assert reader.new() == [(0, 0.1)]
    write(3, [(0, 0.1), (1, 0.2)])
    time.sleep(0.05)
    write(0, [(0, 0.3)])
    (tmp_path / "fold0" / "metrics.jsonl").write_text(
        (tmp_path / "fold0" / "metrics.jsonl").read_text() + '{"epoch": 1, "ema"')  # a line being written
    assert reader.new() == [(1, 0.2), (2, 0.3)]
    assert reader.new() == []


def test_space_values_are_checked_with_the_base_config_and_step_options(tmp_path, tiny_cache, capsys):
    args = tune_args(tmp_path, tiny_cache, space="scheduler: [cosine, step]\n")
    assert main(args) == 2 and "decay_epochs" in capsys.readouterr().err  # step needs decay_epochs...
    from maskds.tuning.space import load_space

    space = load_space(tmp_path / "space.yaml", str(ROOT / "configs/demo.yaml"), ["decay_epochs=1"])
    assert space[0].choices == ("cosine", "step")  # ...which the base overrides may give
    for space in ("lr: {low: 1e-4, high: 1e-3, step: 1}\n", "epochs: {low: 1, high: 8, log: true, step: 2}\n"):
        assert main(tune_args(tmp_path, tiny_cache, space=space)) == 2
        assert "step" in capsys.readouterr().err


def test_a_study_refuses_to_resume_with_another_space_or_base_config(tmp_path):
    import optuna

    from maskds.core.errors import UserError
    from maskds.tuning.space import parse_param
    from maskds.tuning.tune import TuneJob, check_study

    study = optuna.create_study(direction="maximize")
    lr = parse_param("lr", {"low": 1e-4, "high": 1e-3}, "space")
    job = TuneJob("configs/demo.yaml", ["epochs=1"], [lr], tmp_path, "s")
    check_study(study, job)
    check_study(study, job)  # the same: fine
    wider = TuneJob("configs/demo.yaml", ["epochs=1"], [parse_param("lr", {"low": 1e-5, "high": 1e-3}, "space")],
                    tmp_path, "s")
    with pytest.raises(UserError, match="another search space"):
        check_study(study, wider)
    with pytest.raises(UserError, match="another base config"):
        check_study(study, TuneJob("configs/demo.yaml", ["epochs=2"], [lr], tmp_path, "s"))
