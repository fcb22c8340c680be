"""End-to-end training: real `accelerate launch` runs (1 and 2 CPU processes, two loopback nodes) on tiny data."""
import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from maskds.core.errors import UserError
from maskds.model.checkpoint import read_best
from maskds.cli.train import main
from maskds.config.keys import load_config, save_config
from maskds.training.datasets import fold_split, load_train_split
from maskds.model.network import create_model

from train_helpers import ACCEL, ROOT, TINY, env, free_port, launch, metrics_lines

DEMO = ["--config", str(ROOT / "configs/demo.yaml")]
EPOCHS = 8


@pytest.fixture(scope="module")
def two_proc_run(tiny_cache, tmp_path_factory):
    """configs/demo.yaml under 2 gloo processes, batch 4 x accumulation 2, on a tiny model and cache."""
    out = tmp_path_factory.mktemp("runs")
    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={out}", "name=e2e", "folds=[0]", f"epochs={EPOCHS}",
            "batch_size=4", "grad_accum_steps=2", "lr=5e-3", "min_lr=1e-5", *TINY, "num_workers=1",
            "log_with=tensorboard", "validate_raw=true"]
    r = launch(args, "cpu_2proc.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out / "e2e" / "fold0", r


@pytest.mark.slow
def test_two_process_run_writes_the_run_folder(two_proc_run):
    fold_dir, r = two_proc_run
    state = {p.name for p in (fold_dir / "state").iterdir()}
    assert {"config.yaml", "best.safetensors", "metrics.jsonl", "curves.png", "state", "tensorboard"} <= {p.name for p in fold_dir.iterdir()}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl"} <= state
    assert len(metrics_lines(fold_dir)) == EPOCHS
    assert list((fold_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert "F1 (18)" in r.stdout and "EMA" in r.stdout  # the end-of-epoch table
    assert r.stdout.count("face_crop: this recipe") == 1  # demo.yaml's crop, not the tiny cache's: said once


@pytest.mark.slow
def test_f1_rises_above_chance_and_best_is_the_best_ema_epoch(two_proc_run):
    fold_dir, _ = two_proc_run
    lines = metrics_lines(fold_dir)
    ema_f1 = [m["ema"]["macro_f1"] for m in lines]
    chance = 1 / 18  # macro F1 of uniform random guesses over 18 classes
    assert ema_f1[0] < max(ema_f1) and max(ema_f1) > 3 * chance
    best = read_best(fold_dir / "best.safetensors")
    assert best.info["epoch"] == ema_f1.index(max(ema_f1)) and best.info["metrics"]["macro_f1"] == max(ema_f1)
    assert best.resolved["image_size"] == [64, 48] and best.resolved["cache_size"] == [64, 48]
    model = create_model(best.config.model, best.config.head_spec(), pretrained="none")
    model.load_state_dict(best.state_dict)
    for key in ("epoch", "train_loss", "lr", "images_per_s", "raw", "ema"):
        assert key in lines[0]


@pytest.mark.slow
def test_the_saved_ema_weights_score_what_validation_recorded(two_proc_run, tiny_cache):
    """Each process's BatchNorm statistics differ; the saved (main process) EMA must be what was scored."""
    from accelerate import Accelerator

    from maskds.training.engine import evaluate
    from maskds.training.losses import MaskLoss
    from maskds.training.setup import build_loaders

    fold_dir, _ = two_proc_run
    best = read_best(fold_dir / "best.safetensors")
    model = create_model(best.config.model, best.config.head_spec(), pretrained="none")
    model.load_state_dict(best.state_dict)
    table = load_train_split(tiny_cache)[0]
    loaders = build_loaders(best.config, table, 0, best.resolved["image_size"], torch.device("cpu"))
    loss_fn = MaskLoss(best.config.head_spec(), best.config.loss, best.config.label_smoothing)
    scores, _ = evaluate(Accelerator(cpu=True), model, loaders.val, best.config.head_spec(), loss_fn)
    recorded = metrics_lines(fold_dir)[best.info["epoch"]]["ema"]
    assert scores["n"] == recorded["n"]
    assert scores["loss"] == pytest.approx(recorded["loss"], rel=1e-5, abs=1e-6)
    assert scores["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=1e-9)


@pytest.mark.slow
def test_gathered_validation_count_equals_the_validation_set(two_proc_run, tiny_cache):
    fold_dir, _ = two_proc_run
    n_val = len(fold_split(load_train_split(tiny_cache)[0], 0).val)
    assert n_val % (2 * 8) != 0  # 2 processes x val batch 8: the last round is padded with duplicates
    assert all(m["raw"]["n"] == m["ema"]["n"] == n_val for m in metrics_lines(fold_dir))


@pytest.mark.slow
def test_lr_schedule_ends_at_its_final_value_with_2_processes_and_accumulation_2(two_proc_run, tiny_cache):
    fold_dir, _ = two_proc_run
    n_train = len(fold_split(load_train_split(tiny_cache)[0], 0).train)
    per_process = math.ceil((n_train // 4) / 2)    # batches of 4 (last partial dropped) over 2 processes
    expected = EPOCHS * math.ceil(per_process / 2)      # epochs x optimizer updates per epoch
    last = metrics_lines(fold_dir)[-1]
    assert last["updates"] == last["schedule_step"] == last["schedule_total"] == expected
    assert last["lr"] == pytest.approx(1e-5, rel=1e-9)
    assert metrics_lines(fold_dir)[-2]["lr"] > 1e-4  # not reached early


@pytest.mark.slow
@pytest.mark.parametrize("on_device", ["false", "true"])
def test_killed_run_resumes_to_the_same_weights_and_ema(tiny_cache, tmp_path, on_device):
    common = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "folds=[0]", "epochs=2", "batch_size=16",
              *TINY, "num_workers=1", "augment=strong", f"images_on_device={on_device}"]
    assert launch([*common, "name=full"], None).returncode == 0
    # "Killed" after its first epoch's state was saved, then continued with resume=auto.
    assert launch([*common, "name=cut", "stop_after_epochs=1"], None).returncode == 0
    assert len(metrics_lines(tmp_path / "cut" / "fold0")) == 1
    r = launch([*common, "name=cut", "resume=auto"], None)
    assert r.returncode == 0 and "resumed" in r.stdout, r.stderr[-3000:]
    full, cut = tmp_path / "full" / "fold0" / "state", tmp_path / "cut" / "fold0" / "state"
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    ema_a, ema_b = torch.load(full / "custom_checkpoint_0.pkl"), torch.load(cut / "custom_checkpoint_0.pkl")
    assert all(torch.allclose(ema_a[k], ema_b[k], atol=1e-6, rtol=0) for k in ema_a)
    assert not torch.equal(ema_a["module.classifier.weight"], a["classifier.weight"])  # EMA is its own state
    assert [m["epoch"] for m in metrics_lines(tmp_path / "cut" / "fold0")] == [0, 1]


def test_an_existing_run_is_never_overwritten(tiny_cache, tmp_path, capsys):
    (tmp_path / "run" / "fold0").mkdir(parents=True)
    (tmp_path / "run" / "fold0" / "metrics.jsonl").write_text("{}\n")
    rc = main([*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=run", "folds=[0]", *TINY])
    assert rc == 2 and "resume=auto" in capsys.readouterr().err
    assert (tmp_path / "run" / "fold0" / "metrics.jsonl").read_text() == "{}\n"


@pytest.mark.slow
def test_two_nodes_on_loopback_complete_a_short_run(tiny_cache, tmp_path):
    port = free_port()
    config = tmp_path / "two_nodes.yaml"
    config.write_text((ACCEL / "cpu_2proc.yaml").read_text().replace("num_machines: 1", "num_machines: 2")
                      + f"main_process_ip: 127.0.0.1\nmain_process_port: {port}\n")
    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=nodes", "folds=[0]", "epochs=1",
            "batch_size=8", *TINY]
    procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                               "--machine_rank", str(rank), "--num_processes", "2",
                               str(ROOT / "train.py"), *args],
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    fold_dir = tmp_path / "nodes" / "fold0"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (fold_dir / "state").iterdir()}
    assert len(metrics_lines(fold_dir)) == 1 and (fold_dir / "best.safetensors").is_file()


def test_resume_refuses_a_changed_config_and_a_path_for_several_folds(tiny_cache, tmp_path, capsys):
    fold_dir = tmp_path / "run" / "fold0"
    fold_dir.mkdir(parents=True)
    common = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=run", *TINY]
    save_config(load_config(common[1], [*common[2:], "folds=[0]", "epochs=99"]), fold_dir / "config.yaml")
    assert main([*common, "folds=[0]", "resume=auto"]) == 2
    # resuming with other values would not continue the same run; keys like resume may differ
    assert "other values for epochs;" in capsys.readouterr().err
    (fold_dir / "state").mkdir()
    assert main([*common, "folds=all", f"resume={fold_dir / 'state'}"]) == 2
    assert "folds=[k]" in capsys.readouterr().err


def test_training_uses_the_configured_age_bands_and_validation_the_competitions(tiny_cache, tmp_path):
    import numpy as np

    from maskds.model.checkpoint import resolved_metadata
    from maskds.training.datasets import class_labels
    from maskds.training.setup import build_loaders, build_model

    cfg = load_config(ROOT / "configs/demo.yaml", [f"cache={tiny_cache}", f"output_dir={tmp_path}", *TINY,
                                                   "age_thresholds=[30,45]"])
    table, meta = load_train_split(tiny_cache)
    loaders = build_loaders(cfg, table, 0, [64, 48], torch.device("cpu"))
    train_ds, val_ds = loaders.train_set, loaders.val.dataset
    resolved = resolved_metadata(cfg, build_model(cfg, torch.device("cpu"))[0], meta["args"]["size"])
    moved, competition = class_labels(table, [30, 45]), class_labels(table, [30, 60])
    assert np.array_equal(train_ds.labels[:, 0], moved[train_ds.rows])
    assert np.array_equal(val_ds.labels[:, 0], competition[val_ds.rows])
    assert np.array_equal(val_ds.labels[:, 1], np.asarray(table["age"])[val_ds.rows])  # ages for numeric heads
    assert (moved[val_ds.rows] != competition[val_ds.rows]).any()  # some validation person is 45..59
    assert resolved["age_thresholds"] == [30, 45]


def test_resume_keeps_metrics_of_reached_epochs_and_drops_a_half_written_line(tmp_path):
    from maskds.training.records import keep_metrics_before

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 0, "a": 1}\n{"epoch": 1, "a": 2}\n{"epoch": 2, "a": 3}\n{"epoch": 3, "a"')
    keep_metrics_before(metrics, 2)
    assert [line for line in metrics.read_text().splitlines()] == ['{"epoch": 0, "a": 1}', '{"epoch": 1, "a": 2}']


def test_resume_accepts_a_run_saved_before_newer_keys_existed(tmp_path):
    import yaml

    from maskds.config.keys import TrainConfig
    from maskds.training.fit import check_fold_dir

    config = TrainConfig(epochs=3)
    saved = config.to_dict()
    for key in ("age_head", "ema_epochs", "drop_path_rate", "face_crop", "face_margin"):  # an older maskds's run
        del saved[key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_fold_dir(tmp_path, "auto", config)  # missing keys count as their defaults
    check_fold_dir(tmp_path, "auto", dataclasses.replace(config, face_crop="fixed"))  # says what the cache is: free
    with pytest.raises(UserError, match="other values for age_head"):
        check_fold_dir(tmp_path, "auto", TrainConfig(epochs=3, age_head="distribution"))
    del saved["images_on_device"]  # a run from before the GPU data path trained on the CPU path
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match="other values for images_on_device"):
        check_fold_dir(tmp_path, "auto", config)  # auto could pick the GPU path: said, not done silently
    check_fold_dir(tmp_path, "auto", TrainConfig(epochs=3, images_on_device=False))


def test_a_state_from_the_older_layout_is_refused_by_name(tmp_path):
    from maskds.training.fit import check_state_layout

    for i in range(3):  # scheduler, EMA, progress: what maskds saved before the schedule was rebuilt on resume
        (tmp_path / f"custom_checkpoint_{i}.pkl").write_bytes(b"")
    with pytest.raises(UserError, match=f"{tmp_path}.*older maskds"):
        check_state_layout(tmp_path)


@pytest.mark.slow
def test_a_compiled_run_saves_plain_weights_and_resumes_uncompiled(tiny_cache, tmp_path):
    """compile=true: the training step runs torch.compile'd; checkpoints and state hold the plain module."""
    common = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=c", "folds=[0]", "epochs=2",
              "batch_size=16", *TINY]
    r = launch([*common, "compile=true", "stop_after_epochs=1"], None, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    fold_dir = tmp_path / "c" / "fold0"
    best = read_best(fold_dir / "best.safetensors")
    plain = create_model(best.config.model, best.config.head_spec(), pretrained="none")
    assert set(best.state_dict) == set(plain.state_dict())  # no "_orig_mod." prefixes
    assert set(load_file(str(fold_dir / "state" / "model.safetensors"))) == set(plain.state_dict())
    r = launch([*common, "compile=false", "resume=auto"], None)  # compile may change on resume
    assert r.returncode == 0 and "resumed" in r.stdout, r.stderr[-3000:]
    assert [m["epoch"] for m in metrics_lines(fold_dir)] == [0, 1]


@pytest.mark.slow
def test_the_soft_f1_loss_trains_end_to_end(tiny_cache, tmp_path):
    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=f1", "folds=[0]", "epochs=2",
            "batch_size=16", *TINY, "loss=ce+soft_f1", "soft_f1_weight=0.5"]
    r = launch(args, None)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = metrics_lines(tmp_path / "f1" / "fold0")
    assert len(lines) == 2 and lines[1]["train_loss"] < lines[0]["train_loss"]
    assert read_best(tmp_path / "f1" / "fold0" / "best.safetensors").config.loss == "ce+soft_f1"


@pytest.mark.slow
def test_a_step_schedule_trains_end_to_end_and_halves_the_rate_each_epoch(tiny_cache, tmp_path):
    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=s", "folds=[0]", "epochs=2",
            "batch_size=16", *TINY, "scheduler=step", "decay_epochs=1", "decay_rate=0.5", "warmup_epochs=0"]
    r = launch(args, None)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lrs = [m["lr"] for m in metrics_lines(tmp_path / "s" / "fold0")]
    assert lrs[1] == pytest.approx(lrs[0] / 2)


@pytest.mark.slow
def test_the_plateau_schedule_follows_the_validation_f1(tiny_cache, tmp_path):
    from maskds.training.schedule import plateau_step
    from maskds.training.state import RunProgress

    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=p", "folds=[0]", "epochs=4",
            "batch_size=16", *TINY, "scheduler=plateau", "patience_epochs=1", "decay_rate=0.5", "lr=1e-3",
            "warmup_epochs=0"]
    r = launch(args, None)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines, replay = metrics_lines(tmp_path / "p" / "fold0"), RunProgress()
    for m in lines:  # each epoch trains at lr x 0.5^(decays decided by the epochs before it)
        assert m["lr"] == pytest.approx(1e-3 * 0.5 ** replay.plateau_decays)
        plateau_step(replay, m["ema"]["macro_f1"], 1)
    assert len({m["lr"] for m in lines}) > 1  # this run did decay (the check above is not vacuous)
