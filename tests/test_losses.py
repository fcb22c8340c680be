"""Loss tests: 18-class targets decode to the right heads, CE/focal/smoothing maths, head weights, the age heads."""
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


def _soft(ages, band=None, thresholds=(30, 60), sigma=2.5, has_age=None):
    from maskds.training.losses import soft_band_targets

    ages = torch.tensor(ages)
    band = torch.zeros_like(ages) if band is None else torch.tensor(band)
    has_age = torch.ones_like(ages, dtype=torch.bool) if has_age is None else torch.tensor(has_age)
    return soft_band_targets(ages, band, thresholds, sigma, has_age)


def test_soft_band_targets_put_a_boundary_age_on_both_bands_and_a_middle_age_on_one():
    t = _soft([29, 30, 45, 75, 18, 59])
    assert torch.allclose(t.sum(1), torch.ones(6), atol=1e-6)
    assert 0.5 < t[0, 0] < 0.7 and 0.3 < t[0, 1] < 0.5 and t[0, 2] < 1e-6  # 29: nearly 30-59
    assert t[1, 1] > t[1, 0] > 0.3                                          # 30: mirror image
    assert t[2, 1] > 1 - 1e-5                                               # 45: surely 30-59
    assert t[3, 2] > 1 - 1e-5 and t[4, 0] > 1 - 1e-5                        # 75, 18: one band
    assert 0.3 < t[5, 2] < 0.5                                              # 59: nearly >= 60
    assert _soft([29], sigma=0.5)[0, 0] > 0.8 and _soft([29], sigma=6.0)[0, 0] < 0.6  # the width is the key's


def test_soft_band_targets_follow_the_thresholds_read_a_recorded_60_as_60_plus_and_a_band_only_row_as_its_band():
    assert _soft([58], thresholds=(30, 58))[0, 2] > 0.5 > _soft([58])[0, 2]  # 58 is band 2 under [30, 58]
    assert _soft([60])[0].tolist() == pytest.approx([0, 0, 1], abs=1e-6)   # the data's 60 means "60 or older"
    hard = _soft([-1, 29], band=[1, 2], has_age=[False, False])
    assert hard.tolist() == [[0, 1, 0], [0, 0, 1]]


def test_soft_bands_loss_is_cross_entropy_against_the_soft_targets_with_smoothing():
    torch.manual_seed(0)
    spec = HeadSpec("multihead", "soft_bands")
    ages = torch.tensor([29, 45, 75, 18])
    cls = torch.tensor([0, 1, 2, 0])  # bands of those ages; mask and gender 0
    logits = torch.randn(4, 8)
    target = _soft(ages.tolist())
    expected = (F.cross_entropy(logits[:, :3], torch.zeros(4, dtype=torch.long), label_smoothing=0.1)
                + F.cross_entropy(logits[:, 3:5], torch.zeros(4, dtype=torch.long), label_smoothing=0.1)
                + F.cross_entropy(logits[:, 5:], target, label_smoothing=0.1))
    loss = MaskLoss(spec, label_smoothing=0.1)(logits, torch.stack([cls, ages], 1))
    assert torch.allclose(loss, expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs \\(class, age\\) targets"):
        MaskLoss(spec)(logits, cls)


@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_a_band_only_row_trains_soft_bands_exactly_as_bands(kind):
    torch.manual_seed(0)
    logits = torch.randn(6, 8)
    known = labels.KNOWN_MASK | labels.KNOWN_GENDER | labels.KNOWN_BAND | labels.KNOWN_INTERVAL | labels.PSEUDO
    y = torch.stack([torch.tensor([0, 1, 2, 3, 4, 5]), torch.full((6,), -1), torch.full((6,), known)], 1)
    soft = MaskLoss(HeadSpec("multihead", "soft_bands"), kind, label_smoothing=0.1, pseudo_weight=0.5)(logits, y)
    bands = MaskLoss(HeadSpec("multihead", "bands"), kind, label_smoothing=0.1, pseudo_weight=0.5)(logits, y)
    assert torch.allclose(soft, bands, atol=1e-6)


def test_focal_on_a_one_hot_soft_target_is_the_bands_focal_loss():
    from maskds.training.losses import per_sample_ce, per_sample_soft_ce

    torch.manual_seed(0)
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    assert torch.allclose(per_sample_soft_ce(logits, F.one_hot(target, 3).float(), 0.1, 2.0),
                          per_sample_ce(logits, target, 0.1, 2.0), atol=1e-6)


def test_soft_bands_loss_falls_as_the_logits_move_to_the_soft_target_and_is_least_there():
    spec = HeadSpec("multihead", "soft_bands")
    y = torch.tensor([[0, 29], [1, 45]])  # (class, age): 29 is band 0, 45 band 1
    target = _soft([29, 45])
    toward = torch.zeros(2, 8)
    losses = []
    for step in (0.0, 0.5, 1.0):
        toward[:, 5:] = step * target.clamp_min(1e-4).log()
        losses.append(float(MaskLoss(spec, label_smoothing=0.0)(toward, y)))
    assert losses[0] > losses[1] > losses[2]
    fitted = _fit_logits(spec, y)[:, 5:].softmax(-1)  # label_smoothing 0 by default: the optimum is the target
    assert fitted[0].tolist() == pytest.approx(target[0].tolist(), abs=0.02)
    assert fitted[1, 1] > 0.97
