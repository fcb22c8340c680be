"""folds=full: one model on every person (no validation fold, the last epoch's EMA weights) in <run>/full/,
voted by infer.py like a fold, with no out-of-fold predictions and `maskds oof` saying why."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maskds.cli.main import main as maskds
from maskds.core.errors import UserError
from maskds.cli.infer import main as infer
from maskds.inference.inputs import find_checkpoints
from maskds.model.checkpoint import read_best
from maskds.config.keys import load_config
from maskds.config.plan import FULL_MODEL, FoldModel
from maskds.training.datasets import fold_split, load_train_split

from test_inference import make_eval_dir
from train_helpers import ROOT, TINY, launch, metrics_lines


def test_the_full_split_trains_every_row_and_validates_none(tiny_cache):
    table, _ = load_train_split(tiny_cache)
    split = fold_split(table, FULL_MODEL)
    assert np.array_equal(split.train, np.arange(len(table))) and len(split.val) == 0
    ages = np.asarray(table["age"])
    kept = fold_split(table, FULL_MODEL, drop_ages=[int(ages[0])]).train   # drop_ages still leave training
    assert len(kept) == int((ages != ages[0]).sum())


def test_full_needs_no_decision_fitted_out_of_fold_and_no_plateau():
    with pytest.raises(UserError) as err:
        load_config(str(ROOT / "configs/demo.yaml"), ["folds=full", "age_head=regression", "tune_decision=age"])
    assert "tune_decision" in str(err.value.problems) and "folds=full" in str(err.value.problems)
    with pytest.raises(UserError) as err:
        load_config(None, ["folds=full", "scheduler=plateau"])
    assert "plateau" in str(err.value.problems)
    assert load_config(None, ["folds=full"]).fold_models([0, 1, 2]) == [FULL_MODEL]
    with pytest.raises(UserError):
        load_config(None, ["folds=every"])


@pytest.mark.slow
def test_two_processes_train_full_which_infer_votes_and_oof_explains(tiny_cache, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--config", str(ROOT / "configs/demo.yaml"), f"cache={tiny_cache}", f"output_dir={out}", "name=cv",
            "epochs=2", "batch_size=4", "tune_decision=none", *TINY]
    r = launch([*args, "folds=full"], "cpu_2proc.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    full = out / "cv" / "full"
    lines = metrics_lines(full)
    assert [ln["epoch"] for ln in lines] == [0, 1] and all(ln["ema"] is None for ln in lines)
    assert [ln["best"] for ln in lines] == [False, True]              # the last epoch's EMA weights are kept
    assert read_best(full / "best.safetensors").info["epoch"] == 1
    assert not (full / "oof.csv").exists() and (full / "curves.png").is_file()
    assert maskds(["oof", str(out / "cv")]) == 2
    assert "folds=full" in capsys.readouterr().err
    # the cross-validated folds of the same run beside it: infer.py votes them and full alike
    r = launch([*args, "folds=[0]"], "cpu_2proc.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [k for k, _ in find_checkpoints(out / "cv", None)] == [FULL_MODEL, FoldModel(0)]
    data = make_eval_dir(tmp_path / "eval")
    assert infer(["--run", str(out / "cv"), "--data", str(data), "--out", str(tmp_path / "sub.csv"), "--tta", "none",
                  "--num-workers", "0"]) == 0
    assert "x 2 model(s)" in capsys.readouterr().out and len(pd.read_csv(tmp_path / "sub.csv")) == 7
    assert maskds(["oof", str(out / "cv")]) == 0                        # the folds' OOF, full/ left out


def test_tune_refuses_full_which_has_no_out_of_fold_score(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("lr: {low: 1e-4, high: 3e-3, log: true}\n")
    assert maskds(["tune", "--config", str(ROOT / "configs/demo.yaml"), "--space", str(tmp_path / "space.yaml"),
                   "--trials", "1", "--study", "s", "--storage", f"sqlite:///{tmp_path / 'tune.db'}",
                   "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "best.yaml"), "folds=full",
                   "tune_decision=none", f"cache={tmp_path}"]) == 2
    assert "folds=full: a trial is scored on its out-of-fold" in capsys.readouterr().err
    assert not (tmp_path / "tune.db").exists() and not (tmp_path / "runs").exists()
    with pytest.raises(UserError) as err:
        load_config(None, ["folds=full", "validate_raw=true"])
    assert "validate_raw" in str(err.value.problems)


def test_an_epoch_with_nothing_validated_prints_its_line_not_an_empty_table():
    from rich.table import Table
    from rich.text import Text

    from maskds.training.progress import epoch_table
    record = {"epoch": 0, "train_loss": 1.5, "images_per_s": 40.0, "raw": None, "ema": None, "best": True}
    line = epoch_table(FULL_MODEL, 3, record)
    assert isinstance(line, Text) and "no validation: folds=full" in line.plain and "saved (last epoch)" in line.plain
    scores = {"loss": 1.0, "macro_f1": 0.5, "mask_f1": 0.9, "gender_f1": 0.8, "age_f1": 0.6, "accuracy": 0.7, "n": 12}
    table = epoch_table(0, 3, dict(record, ema=scores))
    assert isinstance(table, Table) and table.row_count == 1
