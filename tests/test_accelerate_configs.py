"""The shipped launch configs: `accelerate launch` with each prints only our output (no block of
"values not passed ... defaults used instead"), and each names its precision and process count."""
import subprocess
import sys

import pytest
import yaml

from train_helpers import ACCEL, ROOT, env

CONFIGS = sorted(p.name for p in ACCEL.glob("*.yaml"))


@pytest.mark.parametrize("name", CONFIGS)
def test_each_launch_config_sets_what_the_launcher_would_otherwise_default(name):
    config = yaml.safe_load((ACCEL / name).read_text())
    for key in ("distributed_type", "num_processes", "num_machines", "mixed_precision", "use_cpu"):
        assert key in config, f"{name} leaves {key} to accelerate's defaults"


@pytest.mark.parametrize("name", ["cpu.yaml", "cpu_2proc.yaml"])
def test_launching_a_cpu_config_prints_no_defaults_warning(name):
    # OMP_NUM_THREADS set (train_helpers.env sets 1), as the README says: threads per process are the
    # one launcher value accelerate 1.15's config files cannot hold.
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCEL / name),
                        str(ROOT / "train.py"), "--help"], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "usage: train.py" in r.stdout, r.stderr[-2000:]
    assert "were not passed" not in r.stdout + r.stderr, r.stderr[-2000:]
