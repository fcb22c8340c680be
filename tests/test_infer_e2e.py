"""infer.py end to end: as a subprocess, under `accelerate launch` with 2 processes, and on a trained run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_inference import make_eval_dir, make_run

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict:
    # One thread per process: the machine is small and 2 processes would fight over its cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def infer(args: list[str], processes: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run infer.py with plain python, or under `accelerate launch` with the 2-process CPU config."""
    if processes == 1:
        cmd = [sys.executable, str(ROOT / "infer.py"), *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "accelerate_configs" / "cpu_2proc.yaml"), "--main_process_port", str(free_port()),
               str(ROOT / "infer.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def test_importing_infer_runs_nothing():
    out = subprocess.run([sys.executable, "-c", "import infer; print('ok')"], cwd=ROOT, env=env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok"


@pytest.mark.slow
def test_two_processes_give_the_same_files_as_one(tmp_path):
    data = make_eval_dir(tmp_path / "eval", n=11)  # 11 images in batches of 3: the processes get 2 and 2 batches
    a = make_run(tmp_path / "a", folds=(0, 1), cache_size=(48, 36))
    b = make_run(tmp_path / "b", head="single", folds=(0,), cache_size=(44, 33), seed=3)
    common = ["--run", str(a), "--run", str(b), "--data", str(data), "--tta", "hflip",
              "--batch-size", "3", "--num-workers", "0"]
    one = infer([*common, "--out", str(tmp_path / "one.csv")])
    assert one.returncode == 0, one.stderr
    assert "images/s" in one.stdout and "3 model(s) x 2 TTA view(s)" in one.stdout
    two = infer([*common, "--out", str(tmp_path / "two.csv")], processes=2)
    assert two.returncode == 0, two.stderr
    assert "on 2 process(es)" in two.stdout
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    p1, p2 = (pd.read_csv(tmp_path / f"{n}.probs.csv", dtype={"ImageID": str}) for n in ("one", "two"))
    assert p2["ImageID"].tolist() == p1["ImageID"].tolist() == pd.read_csv(data / "info.csv")["ImageID"].tolist()
    np.testing.assert_allclose(p2.iloc[:, 1:].to_numpy(), p1.iloc[:, 1:].to_numpy(), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("damage,message", [
    ("missing", "a1.jpg: missing"),
    # header intact, pixels cut: found only while predicting, by the process that holds the image;
    # every process must still stop together (no rank left waiting at the gather)
    ("truncated", "a1.jpg cannot be decoded"),
])
def test_bad_input_under_two_processes_exits_nonzero_without_output(tmp_path, damage, message):
    data = make_eval_dir(tmp_path / "eval", n=4)
    image = data / "images" / "a1.jpg"
    if damage == "missing":
        image.unlink()
    else:
        image.write_bytes(image.read_bytes()[:-1500])
    run = make_run(tmp_path / "run", folds=(0,))
    out = infer(["--run", str(run), "--data", str(data), "--out", str(tmp_path / "o" / "s.csv"),
                 "--batch-size", "1"], processes=2)
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_trained_run_gives_a_valid_submission_and_scores(tmp_path, synth_data, tiny_cache):
    """The issue's bar: train the demo config on two folds, infer with TTA, score against the answers."""
    from maskds.inference.models import build_transform, view_params
    from maskds.model.checkpoint import read_best

    train = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "demo.yaml"),
         f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=demo", "folds=[0,1]", "epochs=1",
         "model=test_efficientnet", "pretrained=none", "image_size=[64,48]", "batch_size=8",
         "num_workers=0", "log_with=none"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    run = tmp_path / "demo"
    best = read_best(run / "fold1" / "best.safetensors")
    view = view_params(best.resolved, "fold1")
    assert view.image_size == (64, 48)  # as trained, (H, W) not swapped
    img = np.zeros((*view.cache_size, 3), np.uint8)
    assert tuple(build_transform(view)(image=img)["image"].shape) == (3, 64, 48)

    eval_dir = Path(synth_data) / "eval"
    out = tmp_path / "submission.csv"
    res = infer(["--run", str(run), "--data", str(eval_dir), "--out", str(out), "--tta", "hflip"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 model(s) x 2 TTA view(s)" in res.stdout
    info = pd.read_csv(eval_dir / "info.csv", dtype={"ImageID": str})
    sub = pd.read_csv(out, dtype={"ImageID": str})
    assert sub["ImageID"].tolist() == info["ImageID"].tolist()
    assert sub["ans"].between(0, 17).all()

    score = subprocess.run([sys.executable, "-m", "maskds.cli", "score", str(out),
                            str(eval_dir / "answers.csv"), "--json"],
                           cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert score.returncode == 0, score.stderr
    result = json.loads(score.stdout)
    assert result["n"] == len(info)
    for key in ("macro_f1", "mask_f1", "gender_f1", "age_f1", "accuracy"):
        assert 0.0 <= result[key] <= 1.0
