"""evaluation.decision: class weights fitted for macro F1, and the decision file's checks."""
import json

import numpy as np
import pytest

from maskds.core.errors import UserError
from maskds.evaluation.decision import fit_class_weights, load_decision, macro_f1, save_decision
from maskds.evaluation.metrics import scores


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
    assert np.allclose(load_decision(path, heads), w)
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
