"""evaluation.decision: class weights and age cuts fitted for macro F1, and the decision file's checks."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from maskds.core.errors import UserError
from maskds.core.probabilities import AGE_CENTER, AGE_SCALE, HeadSpec, class_probs_from_heads, probabilities
from maskds.evaluation.decision import (fit_age_thresholds, fit_class_weights, load_decision, macro_f1, save_decision,
                                        shift_age_bands)
from maskds.core.metrics import scores
from maskds.cli.infer import main

from test_inference import make_eval_dir, make_run, read_probs_frame


def test_fast_macro_f1_is_sklearns():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 18, 500), rng.integers(0, 16, 500)
    assert macro_f1(t, p) == pytest.approx(scores(t, p)["macro_f1"], abs=1e-12)


def test_weights_recover_a_rare_class_that_argmax_never_predicts():
    rng = np.random.default_rng(1)
    truth = np.where(rng.random(2000) < 0.1, 2, 0)  # class 2 is rare
    probs = np.full((2000, 18), 0.01)
    probs[:, 0] = 0.6
    probs[:, 2] = np.where(truth == 2, 0.5, 0.3) + rng.normal(0, 0.03, 2000)  # informative, but under class 0
    w = fit_class_weights(probs, truth)
    before, after = macro_f1(truth, probs.argmax(1)), macro_f1(truth, (probs * w).argmax(1))
    assert after > before + 0.3 and w[2] / w[0] > 1.2


def test_a_decision_file_round_trips_and_refuses_other_heads_or_garbage(tmp_path):
    w = np.linspace(0.5, 2.0, 18)
    heads = {"head": "multihead", "age_head": "bands"}
    path = save_decision(tmp_path, w, heads, {"macro_f1": 0.5}, {"macro_f1": 0.6})
    assert np.allclose(load_decision(path, heads).weights, w)
    with pytest.raises(UserError, match=f"{path}.*fitted for heads"):
        load_decision(path, {"head": "multihead", "age_head": "distribution"})
    path.write_text(json.dumps({"kind": "class_weights", "weights": [1.0] * 17, "heads": heads}))
    with pytest.raises(UserError, match="18 positive class weights"):
        load_decision(path)
    path.write_text("{")
    with pytest.raises(UserError, match="is not a maskds decision"):
        load_decision(path)


def test_head_weights_multiply_into_class_weights():
    from maskds.evaluation.decision import class_weights_of

    v = np.array([1.0, 2.0, 3.0, 5.0, 7.0, 11.0, 13.0, 17.0])  # mask 3 | gender 2 | age 3
    w = class_weights_of(v)
    assert w[0] == 1 * 5 * 11 and w[17] == 3 * 7 * 17 and w[2 * 6 + 0 * 3 + 1] == 3 * 5 * 13
    rng = np.random.default_rng(2)
    probs, truth = rng.dirichlet(np.ones(18), 300), rng.integers(0, 18, 300)
    fitted = fit_class_weights(probs, truth, per="head")
    cube = fitted.reshape(3, 2, 3)
    assert np.allclose(cube[0] / cube[1], (cube[0] / cube[1])[0, 0])  # mask weights scale whole slices


def regression_age_probs(ages: np.ndarray, cuts) -> np.ndarray:
    """A regression age head's band probabilities for these predicted ages, read at `cuts`."""
    spec = HeadSpec("multihead", "regression", tuple(cuts))
    logits = torch.zeros(len(ages), spec.num_outputs, dtype=torch.float64)
    logits[:, 5] = torch.as_tensor((ages - AGE_CENTER) / AGE_SCALE)
    return probabilities(logits, spec)["age"].numpy()


def test_shifted_age_bands_are_the_bands_read_at_the_new_cuts():
    ages = np.concatenate([np.linspace(5, 95, 181), [29.5, 30.0, 54.9, 60.2]])
    shifted = shift_age_bands(regression_age_probs(ages, (30, 60)), (30, 60), (33, 55))
    np.testing.assert_allclose(shifted, regression_age_probs(ages, (33, 55)), atol=2e-5)  # float32 probabilities
    assert np.allclose(shifted.sum(1), 1)


def test_age_cuts_fitted_to_an_estimate_pulled_toward_the_mean_age():
    rng = np.random.default_rng(3)
    n = 3000
    true_age = rng.integers(18, 75, n)
    estimate = 0.6 * true_age + 16 + rng.normal(0, 2, n)  # the young read older, the old younger
    band = np.digitize(true_age, [30, 60])
    mask, gender = rng.integers(0, 3, n), rng.integers(0, 2, n)
    probs = {"mask": np.eye(3)[mask] * 0.9 + 0.1 / 3, "gender": np.eye(2)[gender] * 0.9 + 0.05,
             "age": regression_age_probs(estimate, (30, 60))}
    truth = mask * 6 + gender * 3 + band
    cuts = fit_age_thresholds(probs, truth, (30, 60))
    assert abs(cuts[0] - 34) <= 1 and abs(cuts[1] - 52) <= 1  # where 30 and 60 land: 0.6 x age + 16

    def f1(c):
        age = torch.as_tensor(shift_age_bands(probs["age"], (30, 60), c))
        cls = class_probs_from_heads(torch.as_tensor(probs["mask"]), torch.as_tensor(probs["gender"]), age)
        return macro_f1(truth, cls.argmax(1).numpy())
    assert f1(cuts) > f1((30, 60)) + 0.1
    low, high = fit_age_thresholds(probs, truth, (3, 6))  # moves that would cross or leave the ages are not tried
    assert 0 < low < high


def test_an_age_decision_round_trips_and_is_refused_for_other_heads_or_bad_cuts(tmp_path):
    heads = {"head": "multihead", "age_head": "regression"}
    path = save_decision(tmp_path, (32, 55), heads, {"macro_f1": 0.5}, {"macro_f1": 0.6})
    rule = load_decision(path, heads, tmp_path)
    assert rule.kind == "age_thresholds" and rule.age_thresholds == (32, 55) and rule.weights is None
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "heads": {"head": "multihead", "age_head": "bands"}}))
    with pytest.raises(UserError, match=f"{path}.*regression age head"):
        load_decision(path)
    path.write_text(json.dumps({**doc, "age_thresholds": [55, 32]}))
    with pytest.raises(UserError, match=f"{path}.*low < high"):
        load_decision(path)


def test_an_age_decision_reads_the_regression_bands_at_its_cuts(tmp_path, capsys):
    eval_dir = make_eval_dir(tmp_path / "eval")
    run = make_run(tmp_path / "run", folds=(0,), age_head="regression")
    heads = {"head": "multihead", "age_head": "regression"}
    save_decision(run, (33, 50), heads, {"macro_f1": 0.5}, {"macro_f1": 0.6})
    ids = pd.read_csv(eval_dir / "info.csv")["ImageID"].tolist()
    frames = {}
    for name, extra in (("tuned", []), ("plain", ["--no-tuned-decision"])):
        out = tmp_path / f"{name}.csv"
        assert main(["--run", str(run), "--data", str(eval_dir), "--out", str(out), "--num-workers", "0", *extra]) == 0
        frames[name] = (pd.read_csv(out), read_probs_frame(tmp_path / f"{name}.probs.csv", ids))
    assert "age bands cut at 33 and 50" in " ".join(capsys.readouterr().out.split())
    age = [f"age_p{i}" for i in range(3)]
    expect = shift_age_bands(frames["plain"][1][age].to_numpy(), (30, 60), (33, 50))
    np.testing.assert_allclose(frames["tuned"][1][age].to_numpy(), expect, atol=5e-5)  # float32 models
    assert not np.allclose(frames["tuned"][1][age].to_numpy(), frames["plain"][1][age].to_numpy(), atol=1e-3)
    tuned = frames["tuned"][1]
    assert frames["tuned"][0]["ans"].tolist() == tuned[[f"class_p{i}" for i in range(18)]].to_numpy().argmax(1).tolist()
    # A bands-head run refuses the file, naming it, and writes nothing; so do heads assembled with the age
    # from a bands run, even though the regression run gives the mask and gender.
    bands = make_run(tmp_path / "bands", folds=(0,))
    for source in (["--run", str(bands)], ["--head", f"mask,gender={run}", "--head", f"age={bands}"]):
        code = main([*source, "--data", str(eval_dir), "--out", str(tmp_path / "x.csv"), "--num-workers", "0",
                     "--decision", str(run / "decision.json")])
        assert code == 2 and str(run / "decision.json") in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
