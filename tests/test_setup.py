"""training.setup: the EMA's horizon in epochs and its running-mean warm-up."""
import pytest
import torch

from maskds.config.keys import TrainConfig
from maskds.training.setup import build_model, ema_decay_for


def test_the_ema_horizon_is_stated_in_epochs_or_by_decay():
    assert ema_decay_for(TrainConfig(ema_epochs=2.0), updates_per_epoch=50) == pytest.approx(1 - 1 / 100)
    assert ema_decay_for(TrainConfig(ema_decay=0.99, ema_epochs=0.0), updates_per_epoch=50) == 0.99


def test_the_ema_is_the_plain_mean_of_the_weights_until_its_horizon():
    config = TrainConfig(model="test_efficientnet", pretrained="none", ema_decay=0.9)  # horizon 10 updates
    model, ema = build_model(config, torch.device("cpu"))
    weight = model.classifier.weight
    for step, value in enumerate([1.0, 2.0, 6.0], start=1):
        with torch.no_grad():
            weight.fill_(value)
        ema.update(model, step=step)
    assert torch.allclose(ema.module.classifier.weight, torch.full_like(weight, 3.0))  # mean of 1, 2, 6
    for step in range(4, 200):
        ema.update(model, step=step)
    assert ema.get_decay(199) == pytest.approx(0.9)  # the warm-up ended at the horizon
