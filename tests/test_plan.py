"""The fold plan (config/plan.py): the models infer.py --folds names."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("given, folds", [(["full"], [None]), (["0,1,full"], [0, 1, None]), (["0", "1"], [0, 1]),
                                          (["1,", "full"], [1, None])])
def test_folds_name_the_full_model_full_alone_or_in_a_list(given, folds):
    from maskds.cli.infer import parse_args
    from maskds.config.plan import FoldModel

    assert parse_args(["--run", "r", "--data", "d", "--out", "o.csv", "--folds", *given]).folds == [
        FoldModel(k) for k in folds]


@pytest.mark.parametrize("given", ["-2", "one", "0,x", ","])
def test_folds_refuse_what_is_neither_a_fold_number_nor_full(given, capsys):
    from maskds.cli.infer import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["--run", "r", "--data", "d", "--out", "o.csv", "--folds", given])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--folds" in err and "full" in err
