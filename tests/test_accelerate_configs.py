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


def single_process_launches(text: str) -> list[str]:
    """The `accelerate launch` command lines of `text` that use a 1-process config."""
    lines = [ln for ln in text.splitlines() if "accelerate launch" in ln and "--config_file" in ln]
    return [ln for ln in lines if "cpu.yaml" in ln or "single_gpu.yaml" in ln]


def test_the_documented_single_process_launches_are_quiet():
    # Without -q a config error ends in accelerate's CalledProcessError traceback; on the CPU without
    # OMP_NUM_THREADS, also a launcher warning: a new user's first mistake should read as one line.
    docs = [ROOT / "README.md", *sorted((ROOT / "docs/guides").glob("*.md"))]   # the README and its guides
    readme, demo = "\n".join(p.read_text() for p in docs), (ROOT / "scripts/demo.sh").read_text()
    lines = single_process_launches(readme) + single_process_launches(demo)
    assert len(lines) >= 4, lines
    for line in lines:
        assert "accelerate launch -q " in line, line
    for line in single_process_launches(readme):
        assert "cpu.yaml" not in line or "OMP_NUM_THREADS=" in line, line
    assert "export OMP_NUM_THREADS=" in demo


def test_a_config_error_under_a_quiet_single_process_launch_reads_as_one_line():
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "-q", "--config_file",
                        str(ACCEL / "cpu.yaml"), str(ROOT / "train.py"), "--config", "configs/demo.yaml", "lr=fast"],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert (r.stdout + r.stderr).strip() == "error: override: lr: expected float, got 'fast' (str)", r.stderr


@pytest.mark.parametrize("flags, asked, expected", [
    ("fpu avx512f avx512_bf16 avx512_vnni", "bf16", None),      # native: bf16 as the launch config says
    ("fpu avx512f amx_bf16 amx_tile", "bf16", None),
    ("fpu avx2 avx512f avx512bw", "bf16", "no"),                 # emulated by oneDNN: fp32 instead, said
    ("fpu avx2", "no", None),
    ("fpu avx2", None, None),
])
def test_cpu_bf16_only_where_the_cpu_computes_it_in_hardware(tmp_path, flags, asked, expected):
    from maskds.core.distributed import cpu_precision

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    precision, note = cpu_precision(asked, str(info))
    assert precision == expected
    assert (note is not None) == (expected == "no") and (note is None or "training in fp32" in note)
    assert cpu_precision("bf16", str(tmp_path / "absent"))[0] == "no"  # no cpuinfo to read: fp32, the safe side


@pytest.mark.parametrize("native", [True, False])
def test_training_inference_and_the_benches_follow_the_one_cpu_precision_rule(monkeypatch, tmp_path, native):
    import torch

    import maskds.core.distributed as distributed
    from maskds.inference.models import inference_precision
    from maskds.training import fit
    from maskds.config.keys import TrainConfig

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from common import bench_precision

    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda *a, **k: native)  # the one probe
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")   # what cpu.yaml's mixed_precision: bf16 sets
    expected = "bf16" if native else "no"
    for asked in ("auto", "bf16"):
        precision, note = inference_precision(asked)
        assert precision == expected and (note is None) == native
        assert native or "predicting in fp32" in note
    assert bench_precision("bf16", "cpu") == expected and bench_precision("bf16", "cuda") == "bf16"
    assert bench_precision("no", "cpu") == "no"
    monkeypatch.setattr(fit, "Accelerator", lambda **kwargs: kwargs)
    assert fit.make_accelerator(TrainConfig(), tmp_path)["mixed_precision"] in ((None, "bf16") if native else ("no",))


def test_auto_precision_is_the_launch_configs_else_bf16_on_a_gpu_else_none(monkeypatch):
    import torch

    from maskds.inference.models import inference_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_precision("auto")[0] == "no" and inference_precision("fp16")[0] == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_precision("auto") == ("bf16", None)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert inference_precision("auto")[0] == "fp16"
