"""Mixup / CutMix: the images mixed with the reversed batch, the loss mixed at the same lam, seeded draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskds.core.errors import UserError
from maskds.config.keys import load_config
from maskds.training.losses import MaskLoss
from maskds.training.mixing import MixOptions, batch_rng, mix_batch, mixed_loss

from train_helpers import ROOT, TINY, launch, metrics_lines


def test_mixup_mixes_each_image_with_the_reversed_batch():
    x = torch.randint(0, 256, (4, 3, 8, 6), dtype=torch.uint8)
    mixed, lam = mix_batch(x, MixOptions(mixup_alpha=0.4), batch_rng(0, 0, 0, 0))
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * x.float() + (1 - lam) * x.flip(0).float())


def test_cutmix_pastes_a_box_and_lam_is_the_area_kept():
    x = torch.stack([torch.full((3, 40, 30), i, dtype=torch.uint8) for i in range(4)])
    for batch in range(20):
        mixed, lam = mix_batch(x, MixOptions(cutmix_alpha=1.0), batch_rng(1, 0, batch, 0))
        kept = (mixed[0] == 0).float().mean().item()  # image 0 keeps its own pixels outside the box
        assert kept == pytest.approx(lam, abs=1e-6)
        assert set(mixed[0].unique().tolist()) <= {0, 3}  # the rest comes from its partner, image 3


def test_the_draws_depend_only_on_seed_epoch_batch_and_process():
    x = torch.rand(4, 3, 8, 8)
    opts = MixOptions(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.7)
    a = [mix_batch(x, opts, batch_rng(5, e, b, 0))[1] for e in range(2) for b in range(10)]
    b = [mix_batch(x, opts, batch_rng(5, e, b, 0))[1] for e in range(2) for b in range(10)]
    assert a == b and len(set(a)) > 5 and 1.0 in a  # repeatable, varied, and some batches left unmixed
    assert mix_batch(x, MixOptions(), batch_rng(5, 0, 0, 0)) == (x, 1.0)  # off: the batch as it is


def test_a_mixed_loss_is_the_ce_of_the_mixed_one_hot_targets():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 18), torch.randint(0, 18, (6,))
    lam = 0.3
    expected = -(((lam * F.one_hot(y, 18) + (1 - lam) * F.one_hot(y.flip(0), 18)) * logits.log_softmax(-1))
                 .sum(-1).mean())
    assert float(mixed_loss(MaskLoss("single"), lam)(logits, y)) == pytest.approx(float(expected), rel=1e-6)
    plain = MaskLoss("single")
    assert mixed_loss(plain, 1.0) is plain  # an unmixed batch: the loss itself


@pytest.mark.parametrize("overrides,key", [(["mixup_alpha=-1"], "mixup_alpha"), (["mix_prob=1.5"], "mix_prob"),
                                           (["person_sampling=true", "head=single"], "person_sampling"),
                                           (["person_sampling=true", "loss=ce+soft_f1"], "person_sampling")])
def test_bad_mixing_keys_are_refused(overrides, key):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert any(p.startswith(f"{key}:") for p in err.value.problems)


@pytest.mark.slow
def test_mixup_and_cutmix_train_under_two_processes(tiny_cache, tmp_path):
    r = launch(["--config", str(ROOT / "configs/demo.yaml"), f"cache={tiny_cache}", f"output_dir={tmp_path}",
                "name=mix", "folds=[0]", "epochs=1", "batch_size=4", "mixup_alpha=0.2", "cutmix_alpha=1.0",
                "age_head=regression", *TINY], "cpu_2proc.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.isfinite(metrics_lines(tmp_path / "mix" / "fold0")[0]["train_loss"])
