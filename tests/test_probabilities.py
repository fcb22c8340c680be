"""core.probabilities: what each head spec's logits mean, the band probabilities of every age head."""
import math

import pytest
import torch

from maskds.core.probabilities import AGE_CENTER, AGE_RANGE, AGE_SCALE, HeadSpec, expected_age, probabilities


@pytest.mark.parametrize("spec, width", [(HeadSpec("single"), 18), (HeadSpec("multihead"), 8),
                                         (HeadSpec("multihead", "regression"), 6),
                                         (HeadSpec("multihead", "soft_bands"), 8),
                                         (HeadSpec("multihead", "distribution"), 5 + AGE_RANGE[1] - AGE_RANGE[0] + 1)])
def test_each_spec_has_its_logit_width_and_probabilities_that_sum_to_one(spec, width):
    assert spec.num_outputs == width
    p = probabilities(torch.randn(7, width), spec)
    for key, n in (("mask", 3), ("gender", 2), ("age", 3), ("class", 18)):
        assert p[key].shape == (7, n) and torch.allclose(p[key].sum(1), torch.ones(7), atol=1e-5)
    with pytest.raises(ValueError, match="columns"):
        probabilities(torch.randn(7, width + 1), spec)


def test_a_numeric_age_head_needs_the_multihead_and_a_known_name():
    with pytest.raises(ValueError, match="multihead"):
        HeadSpec("single", "regression")
    with pytest.raises(ValueError, match="age_head"):
        HeadSpec("multihead", "ordinal")
    with pytest.raises(ValueError, match="multihead"):
        HeadSpec("single", "soft_bands")


def test_soft_bands_logits_mean_what_bands_logits_mean():
    """soft_bands differs from bands only in training targets: its band probabilities are the softmax of its
    3 logits, whatever the thresholds or the targets' width, and a checkpoint of it is read back as one."""
    from maskds.inference.models import head_spec

    torch.manual_seed(0)
    logits = torch.randn(5, 8)
    soft = HeadSpec("multihead", "soft_bands", (30, 58), age_soft_sigma=4.0)
    assert soft.slices() == HeadSpec("multihead").slices() and expected_age(logits[:, 5:], soft) is None
    p, bands = probabilities(logits, soft), probabilities(logits, HeadSpec("multihead", "bands", (30, 58)))
    assert torch.allclose(p["age"], logits[:, 5:].softmax(-1)) and all(torch.equal(p[k], bands[k]) for k in p)
    assert soft == HeadSpec("multihead", "soft_bands", (30, 58))  # the width is training's, not the logits'
    resolved = {"head": "multihead", "age_head": "soft_bands", "age_thresholds": [30, 60]}
    assert head_spec(resolved, "best.safetensors").num_outputs == 8
    with pytest.raises(ValueError, match="age_soft_sigma"):
        HeadSpec("multihead", "soft_bands", age_soft_sigma=0.0)


def _distribution_logits(age: int) -> torch.Tensor:
    logits = torch.full((1, 5 + AGE_RANGE[1] - AGE_RANGE[0] + 1), -30.0)
    logits[0, 5 + age - AGE_RANGE[0]] = 30.0  # all the mass on one year of age
    return logits


@pytest.mark.parametrize("age, band", [(29, 0), (30, 1), (59, 1), (60, 2), (10, 0), (90, 2)])
def test_the_distribution_head_puts_whole_years_into_the_competitions_bands(age, band):
    spec = HeadSpec("multihead", "distribution")
    logits = _distribution_logits(age)
    assert probabilities(logits, spec)["age"][0].argmax().item() == band
    assert expected_age(logits[:, 5:], spec).item() == pytest.approx(age, abs=1e-3)


def test_moved_thresholds_move_where_a_numeric_age_falls():
    logits = _distribution_logits(58)
    assert probabilities(logits, HeadSpec("multihead", "distribution", (30, 60)))["age"][0].argmax() == 1
    assert probabilities(logits, HeadSpec("multihead", "distribution", (30, 58)))["age"][0].argmax() == 2


def test_the_regression_head_spreads_a_normal_error_over_the_bands():
    spec = HeadSpec("multihead", "regression")
    logits = torch.zeros(2, 6)
    logits[:, 5] = torch.tensor([(29.5 - AGE_CENTER) / AGE_SCALE, (75 - AGE_CENTER) / AGE_SCALE])
    age = probabilities(logits, spec)["age"]
    assert age[0, 0].item() == pytest.approx(0.5, abs=1e-5) and age[0, 2].item() < 1e-6  # on the 30 boundary
    assert age[1, 2].item() == pytest.approx(0.5 * (1 + math.erf((75 - 59.5) / (5 * math.sqrt(2)))), abs=1e-5)
    assert expected_age(logits[:, 5:], spec).tolist() == pytest.approx([29.5, 75.0])
