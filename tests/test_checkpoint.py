"""Checkpoint tests: best weights + metadata round trip, clear errors, transform rebuilt equal, atomic state."""
import json

import albumentations as A
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from maskds.core.errors import UserError
from maskds.model.checkpoint import read_best, resolved_metadata, save_best
from maskds.training.resume import resume_dir, save_state_atomic
from maskds.config.keys import TrainConfig
from maskds.model.network import create_model
from maskds.model.transforms import eval_transform


def _best(tmp_path):
    cfg = TrainConfig(model="test_efficientnet", head="single", pretrained="none", image_size=[64, 48],
                      age_thresholds=[30, 58])
    model = create_model(cfg.model, cfg.head, pretrained="none")
    resolved = resolved_metadata(cfg, model, [96, 72])
    path = tmp_path / "best.safetensors"
    save_best(path, model.state_dict(), cfg, resolved, {"fold": 2, "epoch": 3, "metrics": {"macro_f1": 0.5}})
    return path, cfg, model, resolved


def test_round_trip_rebuilds_the_same_model(tmp_path):
    path, cfg, model, resolved = _best(tmp_path)
    best = read_best(path)
    assert best.config == cfg and best.resolved == resolved
    assert best.info == {"fold": 2, "epoch": 3, "metrics": {"macro_f1": 0.5}}
    fresh = create_model(best.config.model, best.config.head, pretrained="none")
    fresh.load_state_dict(best.state_dict)
    x = torch.randn(2, 3, 64, 48)
    assert torch.equal(fresh.eval()(x), model.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_metadata_is_plain_strings_in_the_documented_format(tmp_path):
    path, cfg, _, resolved = _best(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["maskds_format"] == "1"
    assert json.loads(meta["config"]) == cfg.to_dict()
    assert json.loads(meta["resolved"])["image_size"] == [64, 48]
    assert set(json.loads(meta["resolved"])) == {"model", "head", "age_head", "image_size", "mean", "std", "cache_size",
                                                "age_thresholds", "heads", "face_crop"}
    assert json.loads(meta["resolved"])["heads"] == ["mask", "gender", "age"]


def test_eval_transform_rebuilt_from_the_checkpoint_equals_the_training_one(tmp_path):
    path, _, _, resolved = _best(tmp_path)
    training = eval_transform(resolved["image_size"])
    r = read_best(path).resolved
    rebuilt = eval_transform(r["image_size"])
    img = np.random.default_rng(0).integers(0, 256, size=(96, 72, 3), dtype=np.uint8)
    assert torch.equal(training(image=img)["image"], rebuilt(image=img)["image"])
    assert A.to_dict(training) == A.to_dict(rebuilt)


def test_missing_and_foreign_files_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="nothere.safetensors"):
        read_best(tmp_path / "nothere.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UserError, match="foreign.safetensors.*not a maskds checkpoint"):
        read_best(foreign)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="junk.safetensors"):
        read_best(junk)


def test_resume_dir_choices(tmp_path):
    assert resume_dir("none", tmp_path) is None
    assert resume_dir("auto", tmp_path) is None
    (tmp_path / "state").mkdir()
    assert resume_dir("auto", tmp_path) == tmp_path / "state"
    assert resume_dir(str(tmp_path / "state"), tmp_path / "other") == tmp_path / "state"
    with pytest.raises(UserError, match="resume"):
        resume_dir(str(tmp_path / "missing"), tmp_path)


def test_state_is_saved_through_a_temporary_folder_and_replaced(tmp_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    net = torch.nn.Linear(2, 2)
    acc.prepare(net, torch.optim.SGD(net.parameters(), lr=0.1))
    save_state_atomic(acc, tmp_path)
    first = (tmp_path / "state" / "model.safetensors").stat().st_mtime_ns
    (tmp_path / "state.tmp").mkdir()  # a leftover of a save killed midway is discarded
    save_state_atomic(acc, tmp_path)
    assert (tmp_path / "state" / "model.safetensors").stat().st_mtime_ns >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= {p.name for p in (tmp_path / "state").iterdir()}


def test_a_state_old_left_by_a_killed_save_does_not_block_the_next_save(tmp_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    net = torch.nn.Linear(2, 2)
    acc.prepare(net, torch.optim.SGD(net.parameters(), lr=0.1))
    save_state_atomic(acc, tmp_path)
    (tmp_path / "state.old").mkdir()   # killed while deleting the previous state
    (tmp_path / "state.old" / "leftover").write_text("x")
    save_state_atomic(acc, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
