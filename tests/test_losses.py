"""Loss tests: 18-class targets decode to the right heads, CE/focal/smoothing maths, head weights."""
import pytest
import torch
import torch.nn.functional as F

from maskds.core import labels
from maskds.core.probabilities import SLICES, HeadSpec
from maskds.training.losses import MaskLoss, head_targets, smoothed_focal_ce


def test_head_targets_decode_every_one_of_the_18_classes():
    cls = torch.arange(18)
    t = head_targets(cls)
    for c in range(18):
        assert (int(t["mask"][c]), int(t["gender"][c]), int(t["age"][c])) == labels.decode(c)


def test_single_head_loss_is_18_way_cross_entropy():
    torch.manual_seed(0)
    logits, cls = torch.randn(16, 18), torch.randint(0, 18, (16,))
    loss = MaskLoss("single", label_smoothing=0.1)(logits, cls)
    assert torch.allclose(loss, F.cross_entropy(logits, cls, label_smoothing=0.1), atol=1e-6)


def test_multihead_loss_is_weighted_sum_of_head_cross_entropies():
    torch.manual_seed(0)
    logits, cls = torch.randn(16, 8), torch.randint(0, 18, (16,))
    m, g, a = cls // 6, (cls // 3) % 2, cls % 3
    expected = (1.0 * F.cross_entropy(logits[:, SLICES["mask"]], m, label_smoothing=0.05)
                + 2.0 * F.cross_entropy(logits[:, SLICES["gender"]], g, label_smoothing=0.05)
                + 0.5 * F.cross_entropy(logits[:, SLICES["age"]], a, label_smoothing=0.05))
    loss = MaskLoss("multihead", label_smoothing=0.05, head_weights=[1.0, 2.0, 0.5])(logits, cls)
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize("head,width", [("single", 3), ("single", 8), ("multihead", 18), ("multihead", 3)])
def test_loss_refuses_logits_of_the_wrong_width(head, width):
    # The baseline built its 18-class loss for 3 classes; a wrong width must fail loudly.
    with pytest.raises(ValueError, match="logits"):
        MaskLoss(head)(torch.randn(4, width), torch.zeros(4, dtype=torch.long))


def test_focal_with_gamma_zero_is_ce_and_down_weights_easy_examples():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.2, 0.0, 0.1]])
    target = torch.tensor([0, 0])
    ce = smoothed_focal_ce(logits, target, 0.0, 0.0)
    assert torch.allclose(ce, F.cross_entropy(logits, target), atol=1e-6)
    easy_ce = smoothed_focal_ce(logits[:1], target[:1], 0.0, 0.0)
    easy_focal = smoothed_focal_ce(logits[:1], target[:1], 0.0, 2.0)
    assert easy_focal < 0.01 * easy_ce  # p_true ~ 0.99: (1 - p)^2 shrinks it ~10^4 times
    focal = MaskLoss("multihead", kind="focal", focal_gamma=2.0)(torch.randn(4, 8), torch.arange(4))
    assert torch.isfinite(focal)


def test_loss_is_float32_under_half_precision_logits():
    logits = torch.randn(4, 8).half()
    loss = MaskLoss("multihead")(logits, torch.arange(4))
    assert loss.dtype == torch.float32


def _fit_logits(spec, y: torch.Tensor, steps: int = 300) -> torch.Tensor:
    """Logits (one free row per target) after Adam steps on MaskLoss alone."""
    logits = torch.zeros(len(y), spec.num_outputs, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.2)
    for _ in range(steps):
        opt.zero_grad()
        MaskLoss(spec)(logits, y).backward()
        opt.step()
    return logits.detach()


@pytest.mark.parametrize("age_head", ["regression", "distribution"])
def test_a_numeric_age_head_learns_the_age_in_years(age_head):
    """Gradient steps on the age logits alone move the expected age onto the true ages."""
    from maskds.core.probabilities import HeadSpec, expected_age

    spec = HeadSpec("multihead", age_head)
    ages = torch.tensor([18, 25, 41, 59])
    y = torch.stack([torch.tensor([0, 1, 8, 15]), ages], dim=1)  # (class id, age) rows
    logits = _fit_logits(spec, y)
    assert expected_age(logits[:, spec.slices()["age"]], spec).tolist() == pytest.approx(
        ages.float().tolist(), abs=1.5)
    with pytest.raises(ValueError, match="needs \\(class, age\\) targets"):
        MaskLoss(spec)(logits, y[:, 0])


@pytest.mark.parametrize("age_head", ["regression", "distribution"])
def test_a_recorded_60_means_60_or_older_so_the_top_band_is_learnt_whole(age_head):
    """The data records everyone 60+ as 60: trained on it, a numeric head must put a 60 in the >= 60 band."""
    from maskds.core.probabilities import HeadSpec, probabilities

    spec = HeadSpec("multihead", age_head)
    bands = probabilities(_fit_logits(spec, torch.tensor([[2, 60], [0, 25]])), spec)["age"]
    assert bands[0, 2] > 0.8 and bands[1, 0] > 0.8


def test_soft_macro_f1_loss_is_one_minus_macro_f1_for_hard_predictions():
    from sklearn.metrics import f1_score

    from maskds.training.losses import soft_macro_f1_loss

    target = torch.tensor([0, 0, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 2, 2, 0])
    probs = F.one_hot(pred, 3).float()
    expected = 1 - f1_score(target.numpy(), pred.numpy(), average="macro")
    assert float(soft_macro_f1_loss(probs, target)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", ["soft_f1", "ce+soft_f1"])
def test_soft_f1_kinds_train_the_18_class_probabilities_toward_the_truth(kind):
    from maskds.training.losses import MaskLoss

    torch.manual_seed(0)
    y = torch.stack([torch.arange(18), torch.full((18,), 35)], 1)  # (class, age) for every class
    logits = torch.zeros(18, 6, requires_grad=True)  # multihead with a regression age head
    loss_fn = MaskLoss(HeadSpec("multihead", "regression"), kind, soft_f1_weight=2.0)
    opt = torch.optim.SGD([logits], lr=0.5)
    first = float(loss_fn(logits, y))
    for _ in range(30):
        opt.zero_grad()
        loss_fn(logits, y).backward()
        opt.step()
    assert float(loss_fn(logits, y)) < first
    if kind == "ce+soft_f1":  # the per-head part is there too: more than the soft F1 term alone
        assert first > 2.0 * float(MaskLoss(HeadSpec("multihead", "regression"), "soft_f1")(torch.zeros(18, 6), y))
