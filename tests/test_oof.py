"""`maskds oof` and the tuned decision end to end on a trained 2-fold run; age heads under 2 processes."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from maskds.core.metrics import scores
from maskds.model.checkpoint import read_best
from maskds.training.datasets import fold_split, load_train_split

from train_helpers import ROOT, TINY, env, launch, metrics_lines

DEMO = ["--config", str(ROOT / "configs/demo.yaml")]


def maskds(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskds.cli", *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)


def infer(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), *map(str, args), "--num-workers", "0"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_fold_run(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("oofruns")
    r = launch([*DEMO, f"cache={tiny_cache}", f"output_dir={out}", "name=two", "folds=[0,1]", "epochs=2",
                "batch_size=8", "age_head=regression", "tune_decision=age", *TINY], None)
    assert r.returncode == 0, r.stderr[-3000:]
    run = out / "two"
    shutil.copy(run / "decision.json", out / "decision_from_train.json")  # before a test refits it
    return run


@pytest.mark.slow
def test_train_fits_the_configs_decision_on_every_folds_out_of_fold_predictions(two_fold_run):
    # configs/demo.yaml: tune_decision: age (a regression age head's band cuts, fitted after the folds)
    decision = json.loads((two_fold_run.parent / "decision_from_train.json").read_text())
    assert decision["kind"] == "age_thresholds" and sorted(decision["fitted_on"]) == ["fold0", "fold1"]
    low, high = decision["age_thresholds"]
    assert abs(low - 30) <= 5 and abs(high - 60) <= 8
    assert decision["oof_after"]["macro_f1"] >= decision["oof_before"]["macro_f1"]


@pytest.mark.slow
def test_oof_joins_the_folds_and_each_fold_matches_its_best_validation(two_fold_run, tiny_cache):
    r = maskds("oof", two_fold_run, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    table = load_train_split(tiny_cache)[0]
    persons = np.asarray(table["person_id"])
    val = np.concatenate([fold_split(table, k).val for k in (0, 1)])
    assert result["folds"] == 2 and result["n"] == len(val) and result["persons"] == len(set(persons[val]))
    for k in (0, 1):
        oof = pd.read_csv(two_fold_run / f"fold{k}" / "oof.csv", dtype={"person_id": str})
        best = read_best(two_fold_run / f"fold{k}" / "best.safetensors").info
        assert oof["row"].tolist() == fold_split(table, k).val.tolist()
        probs = oof[[f"class_p{i}" for i in range(18)]].to_numpy()
        assert (probs.argmax(1) == oof["pred"]).all()
        assert scores(oof["truth"], oof["pred"])["macro_f1"] == pytest.approx(best["metrics"]["macro_f1"], abs=1e-9)
        assert metrics_lines(two_fold_run / f"fold{k}")[best["epoch"]]["best"]


@pytest.mark.slow
def test_the_gallery_and_confusion_plot_are_pictures(two_fold_run, tmp_path):
    r = maskds("oof", two_fold_run, "--gallery", tmp_path / "errors.png", "--plot", tmp_path / "cm.png", "--top", 8)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # rich wraps long lines
    assert "out of fold (2 folds" in text and "error gallery" in text
    for name in ("errors.png", "cm.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_tuned_decision_round_trips_through_the_run_into_infer(two_fold_run, synth_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_fold_run, run)
    r = maskds("oof", run, "--tune-decision")
    assert r.returncode == 0 and "tuned decision" in " ".join(r.stdout.split()), r.stderr
    decision = json.loads((run / "decision.json").read_text())
    trained = read_best(run / "fold0" / "best.safetensors").config
    assert decision["heads"] == {"head": trained.head, "age_head": trained.age_head} and len(decision["weights"]) == 18
    # A decision that always favours class 5 makes the answers visibly its own.
    decision["weights"] = [1e-3] * 18
    decision["weights"][5] = 1.0
    (run / "decision.json").write_text(json.dumps(decision))
    eval_dir = synth_data / "eval"
    tuned = infer("--run", run, "--data", eval_dir, "--out", tmp_path / "tuned.csv")
    assert tuned.returncode == 0 and "applied the tuned decision" in tuned.stdout, tuned.stderr
    plain = infer("--run", run, "--data", eval_dir, "--out", tmp_path / "plain.csv", "--no-tuned-decision")
    assert plain.returncode == 0 and "tuned decision" not in plain.stdout
    probs = pd.read_csv(tmp_path / "tuned.probs.csv")[[f"class_p{i}" for i in range(18)]].to_numpy()
    weights = np.asarray(decision["weights"])
    assert (pd.read_csv(tmp_path / "tuned.csv")["ans"].to_numpy() == (probs * weights).argmax(1)).all()
    assert (pd.read_csv(tmp_path / "plain.csv")["ans"].to_numpy() == probs.argmax(1)).all()
    oof = run / "fold1" / "oof.csv"  # a retrained fold: the decision was fitted on other predictions
    saved = oof.read_bytes()
    oof.write_bytes(saved.replace(b"\n", b"\r\n", 1))
    stale = infer("--run", run, "--data", eval_dir, "--out", tmp_path / "stale.csv")
    assert stale.returncode == 2 and "fitted on other out-of-fold predictions" in stale.stderr
    oof.write_bytes(saved)
    decision["heads"]["age_head"] = "ordinal"  # fitted for other heads than the checkpoints hold
    (run / "decision.json").write_text(json.dumps(decision))
    bad = infer("--run", run, "--data", eval_dir, "--out", tmp_path / "bad.csv")
    assert bad.returncode == 2 and f"{run / 'decision.json'}" in bad.stderr and not (tmp_path / "bad.csv").exists()


@pytest.mark.slow
def test_oof_refuses_a_fold_without_oof_or_folds_from_other_caches(two_fold_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_fold_run, run)
    oof = pd.read_csv(run / "fold1" / "oof.csv", dtype=str)
    oof.assign(cache_id="0123456789abcdef").to_csv(run / "fold1" / "oof.csv", index=False)
    r = maskds("oof", run)
    assert r.returncode == 2 and "different caches" in r.stderr and str(run / "fold1") in r.stderr
    (run / "fold1" / "oof.csv").unlink()
    r = maskds("oof", run)
    assert r.returncode == 2 and f"{run / 'fold1'}: no oof.csv" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("age_head", ["regression", "distribution"])
def test_an_age_head_trains_resumes_and_predicts_under_two_processes(age_head, tiny_cache, synth_data, tmp_path):
    common = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=age", "folds=[0]", "epochs=2",
              "batch_size=4", f"age_head={age_head}", "tune_decision=age", *TINY]
    r = launch([*common, "stop_after_epochs=1"], "cpu_2proc.yaml")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    r = launch([*common, "resume=auto"], "cpu_2proc.yaml")
    assert r.returncode == 0 and "resumed" in r.stdout, r.stderr[-3000:]
    fold = tmp_path / "age" / "fold0"
    assert [m["epoch"] for m in metrics_lines(fold)] == [0, 1]
    best = read_best(fold / "best.safetensors")
    assert best.resolved["age_head"] == age_head and best.config.age_head == age_head
    assert (fold / "oof.csv").is_file()
    # tune_decision: age, fitted on the main process (regression), or not fitted (distribution)
    assert (tmp_path / "age" / "decision.json").is_file() == (age_head == "regression")
    out = tmp_path / "sub.csv"
    res = infer("--run", tmp_path / "age", "--data", synth_data / "eval", "--out", out, "--tta", "hflip")
    assert res.returncode == 0, res.stderr[-3000:]
    assert ("age bands cut at" in res.stdout) == (age_head == "regression")
    probs = pd.read_csv(tmp_path / "sub.probs.csv")
    assert np.allclose(probs[[f"age_p{i}" for i in range(3)]].sum(axis=1), 1, atol=1e-5)
    assert pd.read_csv(out)["ans"].between(0, 17).all()
