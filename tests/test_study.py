"""What a tune study keeps across resumes (tuning/study.py): one space and the base config the user set."""
from __future__ import annotations

import pytest
from train_helpers import ROOT


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


def test_a_study_compares_the_base_config_by_its_values_not_its_path(tmp_path, monkeypatch):
    import optuna

    from maskds.core.errors import UserError
    from maskds.tuning.space import parse_param
    from maskds.tuning.tune import TuneJob, check_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("epochs: 2\nlr: 1.0e-3\n")
    lr = parse_param("lr", {"low": 1e-4, "high": 1e-3}, "space")
    study = optuna.create_study(direction="maximize")
    check_study(study, TuneJob("base.yaml", [], [lr], tmp_path, "s"))
    check_study(study, TuneJob("./base.yaml", [], [lr], tmp_path, "s"))  # the same file: the same config
    check_study(study, TuneJob(str(tmp_path / "base.yaml"), [], [lr], tmp_path, "s"))
    (tmp_path / "base.yaml").write_text("epochs: 3\nlr: 1.0e-3\n")  # edited between two runs
    with pytest.raises(UserError, match="another base config"):
        check_study(study, TuneJob("base.yaml", [], [lr], tmp_path, "s"))


def test_a_study_compares_only_the_keys_the_user_set_so_a_new_config_field_resumes(tmp_path, monkeypatch):
    import optuna

    from maskds.core.errors import UserError
    from maskds.config.keys import TrainConfig
    from maskds.tuning.space import parse_param
    from maskds.tuning.tune import TuneJob, check_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("epochs: 2\nlr: 1.0e-3\nseed: 7\n")
    lr = parse_param("lr", {"low": 1e-4, "high": 1e-3}, "space")
    job = TuneJob("base.yaml", [], [lr], tmp_path, "s")
    study = optuna.create_study(direction="maximize")
    check_study(study, job)
    plain = TrainConfig.to_dict
    monkeypatch.setattr(TrainConfig, "to_dict", lambda self: {**plain(self), "new_field": 0.5})  # a field added since
    check_study(study, job)
    monkeypatch.setattr(TrainConfig, "to_dict", plain)  # (load_config would take it for a key of the overrides)
    check_study(study, TuneJob("base.yaml", ["augment=medium"], [lr], tmp_path, "s"))  # a default, said: the same
    with pytest.raises(UserError, match=r"another base config.*seed: 7 in the study, 8 now"):
        check_study(study, TuneJob("base.yaml", ["seed=8"], [lr], tmp_path, "s"))
    (tmp_path / "base.yaml").write_text("lr: 1.0e-3\nseed: 7\n")  # epochs: 2 dropped, so the default 10
    with pytest.raises(UserError, match=r"another base config.*epochs: 2 in the study, 10 now"):
        check_study(study, job)


def test_a_study_stored_by_the_old_code_resumes_without_its_missing_fields_and_refuses_a_changed_value(tmp_path):
    import json

    import optuna

    from maskds.core.errors import UserError
    from maskds.tuning.space import describe, parse_param
    from maskds.tuning.tune import TuneJob, check_study
    from maskds.config.keys import load_config

    lr = parse_param("lr", {"low": 1e-4, "high": 1e-3}, "space")
    job = TuneJob(str(ROOT / "configs/demo.yaml"), ["epochs=1"], [lr], tmp_path, "s")
    whole = load_config(job.config, job.overrides).to_dict()  # what the old code stored: the whole config
    del whole["extra_per_epoch"], whole["extra_weight"]        # fields added after the study began
    whole["validate_raw"] = not whole["validate_raw"]          # a default the user never set, changed since
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("space", describe(job.space))
    study.set_user_attr("base", json.dumps(whole, sort_keys=True))
    check_study(study, job)                                    # resumes
    with pytest.raises(UserError, match=r"another base config.*epochs: 1 in the study, 2 now"):
        check_study(study, TuneJob(job.config, ["epochs=2"], [lr], tmp_path, "s"))
