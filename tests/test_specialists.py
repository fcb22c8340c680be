"""Per-head specialists: a run that learns some heads (`heads: [age]`), and `infer.py --head` assembling
the answer from heads of different runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from maskds.core.errors import UserError
from maskds.core.probabilities import probs_from_frame
from maskds.core.metrics import selection_score
from maskds.inference.assemble import parse_heads
from maskds.cli.infer import main
from maskds.model.checkpoint import read_best
from maskds.config.keys import load_config
from maskds.training.losses import MaskLoss

from test_inference import make_eval_dir, make_run
from train_helpers import ROOT, TINY, launch, metrics_lines


def read(path) -> dict[str, np.ndarray]:
    return probs_from_frame(pd.read_csv(path, dtype={"ImageID": str}).set_index("ImageID"))


def test_parse_heads_covers_every_head_once_and_merges_a_source_named_twice():
    sources = parse_heads(["age=runs/a", "mask=runs/b", "gender=runs/a"])
    assert [(s.heads, str(s.source)) for s in sources] == [(("gender", "age"), "runs/a"), (("mask",), "runs/b")]


@pytest.mark.parametrize("items,message", [
    (["mask,gender=a", "age=b", "age=c"], "the age head is given twice (b and c)"),
    (["mask,gender=a"], "no source gives the age head(s); add --head age=RUN"),
    (["mask,gender,eyes=a"], "unknown head 'eyes'; the heads are mask, gender, age"),
    (["runs/a"], "write HEADS=RUN"),
    (["age="], "write HEADS=RUN"),
])
def test_parse_heads_refuses_a_bad_cover(items, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_heads(items)


def test_a_specialist_loss_trains_its_heads_only():
    torch.manual_seed(0)
    logits = torch.randn(6, 8, requires_grad=True)
    y = torch.tensor([0, 5, 7, 10, 14, 17])
    MaskLoss("multihead", heads=["age"])(logits, y).backward()
    grad = logits.grad
    assert grad[:, :5].abs().max() == 0  # mask (3) and gender (2) logits: no gradient
    assert grad[:, 5:].abs().max() > 0
    with torch.no_grad():
        full = MaskLoss("multihead", head_weights=[0.0, 0.0, 1.0])(logits, y)
        assert float(MaskLoss("multihead", heads=["age"])(logits, y)) == pytest.approx(float(full))


def test_selection_score_is_macro_f1_for_a_full_run_and_the_heads_mean_for_a_specialist():
    scores = {"macro_f1": 0.5, "mask_f1": 0.9, "gender_f1": 0.7, "age_f1": 0.4}
    assert selection_score(scores) == 0.5
    assert selection_score(scores, ["age"]) == 0.4
    assert selection_score(scores, ["gender", "age"]) == pytest.approx(0.55)


@pytest.mark.parametrize("overrides,message", [
    (["heads=[age]", "head=single"], "needs head=multihead"),
    (["heads=[age]", "loss=ce+soft_f1"], "scores the 18 classes"),
    (["heads=[age, age]"], "must list distinct heads"),
    (["heads=[]"], "must list distinct heads"),
])
def test_a_bad_heads_key_is_refused_naming_it(overrides, message):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert "heads:" in str(err.value.problems) and message in str(err.value.problems)


def test_heads_assembled_from_two_runs_equal_each_runs_own_heads(tmp_path):
    data = make_eval_dir(tmp_path / "eval", n=5)
    full = make_run(tmp_path / "full", folds=(0, 1))
    age = make_run(tmp_path / "age", folds=(0,), seed=5, heads=("age",))
    common = ["--data", str(data), "--num-workers", "0"]
    assert main(["--run", str(full), "--out", str(tmp_path / "full.csv"), *common]) == 0
    assert main(["--head", f"mask,gender={full}", "--head", f"age={age}", "--out", str(tmp_path / "mix.csv"),
                 *common]) == 0
    # the age run alone (as a CSV source: a specialist's folder is refused by --run) through --head too
    assert main(["--head", f"mask,gender={tmp_path / 'full.probs.csv'}", "--head", f"age={age}",
                 "--out", str(tmp_path / "mix2.csv"), *common]) == 0
    f, m = read(tmp_path / "full.probs.csv"), read(tmp_path / "mix.probs.csv")
    for head in ("mask", "gender"):
        np.testing.assert_allclose(m[head], f[head], atol=1e-6)
    assert np.abs(m["age"] - f["age"]).max() > 1e-3  # another model's age head
    cls = m["mask"][:, :, None, None] * m["gender"][:, None, :, None] * m["age"][:, None, None, :]
    np.testing.assert_allclose(m["class"], cls.reshape(-1, 18), atol=1e-6)
    np.testing.assert_allclose(read(tmp_path / "mix2.probs.csv")["class"], m["class"], atol=1e-6)
    sub = pd.read_csv(tmp_path / "mix.csv")
    assert (sub["ans"].to_numpy() == m["class"].argmax(1)).all()


def test_a_specialist_cannot_answer_for_heads_it_did_not_learn(tmp_path, capsys):
    data = make_eval_dir(tmp_path / "eval", n=3)
    full = make_run(tmp_path / "full", folds=(0,))
    age = make_run(tmp_path / "age", folds=(0,), heads=("age",))
    out = tmp_path / "o" / "s.csv"
    assert main(["--run", str(age), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "learned only the age head(s)" in err and f"--head age={age}" in err
    assert main(["--head", f"mask={full}", "--head", f"gender,age={age}", "--data", str(data), "--out", str(out)]) == 2
    assert "cannot give gender" in capsys.readouterr().err
    assert main(["--run", str(full), "--head", f"age={age}", "--data", str(data), "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["--head", f"mask,gender,age={full}", "--head", f"age={age}", "--data", str(data), "--out",
                 str(out)]) == 2
    assert "the age head is given twice" in capsys.readouterr().err
    assert main(["--head", f"mask,gender={full}", "--data", str(data), "--out", str(out)]) == 2
    assert "no source gives the age head(s)" in capsys.readouterr().err
    assert not out.parent.exists()


@pytest.mark.slow
def test_a_specialist_trains_under_two_processes_and_is_assembled(tiny_cache, synth_data, tmp_path):
    """heads=[age] on 2 processes: its epochs are picked by the age F1, its checkpoint says which heads it
    holds, and infer.py assembles it with a full run's mask and gender."""
    common = ["--config", str(ROOT / "configs/demo.yaml"), f"cache={tiny_cache}", f"output_dir={tmp_path}",
              "folds=[0]", "epochs=2", "batch_size=8", "age_head=bands", "tune_decision=none", *TINY]
    r = launch([*common, "name=age", "heads=[age]"], "cpu_2proc.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = metrics_lines(tmp_path / "age" / "fold0")
    assert all(line["ema"]["score"] == line["ema"]["age_f1"] for line in lines)
    best = max(range(len(lines)), key=lambda i: (lines[i]["ema"]["score"], -i))
    ckpt = read_best(tmp_path / "age" / "fold0" / "best.safetensors")
    assert ckpt.resolved["heads"] == ["age"] and ckpt.config.heads == ["age"]
    assert ckpt.info["epoch"] == lines[best]["epoch"]
    r = launch([*common, "name=full", "epochs=1"], None)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "sub.csv"
    assert main(["--head", f"mask,gender={tmp_path / 'full'}", "--head", f"age={tmp_path / 'age'}",
                 "--data", str(synth_data / "eval"), "--out", str(out), "--num-workers", "0"]) == 0
    assert len(pd.read_csv(out)) == len(pd.read_csv(synth_data / "eval" / "info.csv"))
