"""Distributed failures training survives, each under real CPU processes: resuming under another process
count, a write failing on the main process (two loopback nodes), and BatchNorm statistics per process."""
import math
import subprocess
import sys

import pytest
import torch

from maskds.training.datasets import fold_split, load_train_split

from train_helpers import ACCEL, ROOT, TINY, env, free_port, launch, metrics_lines

DEMO = ["--config", str(ROOT / "configs/demo.yaml")]


@pytest.mark.slow
def test_resume_under_another_process_count_ends_the_schedule_at_min_lr(tiny_cache, tmp_path):
    common = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=cut", "folds=[0]", "epochs=2",
              "batch_size=4", "grad_accum_steps=1", "lr=5e-3", "min_lr=1e-5", *TINY]
    r = launch([*common, "stop_after_epochs=1"], None)  # the first epoch on 1 process, then "killed"
    assert r.returncode == 0, r.stderr[-3000:]
    r = launch([*common, "resume=auto"], "cpu_2proc.yaml")  # the rest on 2 processes
    assert r.returncode == 0 and "resumed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    n_batches = len(fold_split(load_train_split(tiny_cache)[0], 0).train) // 4
    one, two = n_batches, math.ceil(n_batches / 2)  # optimizer updates per epoch on 1 and on 2 processes
    first, last = metrics_lines(tmp_path / "cut" / "fold0")
    assert first["updates"] == first["schedule_step"] == one
    assert last["updates"] == one + two
    assert last["schedule_step"] == last["schedule_total"] == 2 * two  # the whole schedule, this run's size
    assert last["lr"] == pytest.approx(1e-5, rel=1e-9)


@pytest.mark.slow
def test_a_write_failing_on_the_main_process_stops_every_node_promptly(tiny_cache, tmp_path):
    fold_dir = tmp_path / "nodes" / "fold0"
    (fold_dir / "best.safetensors").mkdir(parents=True)  # a folder where the checkpoint goes: the write fails
    (fold_dir / "best.safetensors" / "keep").write_text("x")
    port = free_port()
    config = tmp_path / "two_nodes.yaml"
    config.write_text((ACCEL / "cpu_2proc.yaml").read_text().replace("num_machines: 1", "num_machines: 2")
                      + f"main_process_ip: 127.0.0.1\nmain_process_port: {port}\n")
    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=nodes", "folds=[0]", "epochs=2",
            "batch_size=8", "resume=auto", *TINY]
    procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                               "--machine_rank", str(rank), "--num_processes", "2", str(ROOT / "train.py"), *args],
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]  # today's gloo timeout would be 30 minutes
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode != 0 for p in procs), outs
    assert "error: writing epoch 0's files" in outs[0] and "Is a directory" in outs[0], outs[0][-3000:]
    assert "process 0 failed while writing epoch 0's files" in outs[1], outs[1][-3000:]
    assert not (fold_dir / "state").exists()  # no epoch counts as done


@pytest.mark.slow
def test_several_folds_train_one_after_another_under_two_processes(tiny_cache, tmp_path):
    # accelerate's end_training() ends the process group: called per fold, the second fold had none.
    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=two", "folds=[0,1]", "epochs=1",
            "batch_size=8", *TINY]
    r = launch(args, "cpu_2proc.yaml")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for k in (0, 1):
        assert len(metrics_lines(tmp_path / "two" / f"fold{k}")) == 1
        assert (tmp_path / "two" / f"fold{k}" / "best.safetensors").is_file()


SPY = '''"""train.py, each process also writing its EMA's BatchNorm statistics as training left them (before any
averaging) to BN_DIR/bn<rank>.pt."""
import sys

import torch

from maskds.training import fit
from maskds.cli.train import main

train_one_epoch = fit.train_one_epoch


def spy(accelerator, state, *args, **kwargs):
    result = train_one_epoch(accelerator, state, *args, **kwargs)
    stats = {k: v.clone() for k, v in state.ema.module.named_buffers() if k.endswith(("running_mean", "running_var"))}
    torch.save(stats, f"BN_DIR/bn{accelerator.process_index}.pt")
    return result


fit.train_one_epoch = spy
sys.exit(main())
'''


@pytest.mark.slow
def test_full_saves_the_mean_of_the_processes_batchnorm_statistics(tiny_cache, tmp_path):
    """folds=full validates nothing, and validation is where the fold path averages the EMA's BatchNorm
    buffers: the saved ones must still be the mean over processes, not the main process's own."""
    from maskds.model.checkpoint import read_best

    script = tmp_path / "train_spy.py"
    script.write_text(SPY.replace("BN_DIR", str(tmp_path)))
    args = [*DEMO, f"cache={tiny_cache}", f"output_dir={tmp_path}", "name=bn", "folds=full", "epochs=1",
            "batch_size=4", "limit_train_batches=2", "tune_decision=none", *TINY]
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(ACCEL / "cpu_2proc.yaml"), str(script), *args],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    per_process = [torch.load(tmp_path / f"bn{rank}.pt") for rank in (0, 1)]
    saved = read_best(tmp_path / "bn" / "full" / "best.safetensors").state_dict
    assert per_process[0] and set(per_process[0]) <= set(saved)
    assert any(not torch.equal(per_process[0][k], per_process[1][k]) for k in per_process[0])  # their own batches
    for k, first in per_process[0].items():
        assert torch.allclose(saved[k], (first + per_process[1][k]) / 2, rtol=1e-6, atol=1e-7), k
