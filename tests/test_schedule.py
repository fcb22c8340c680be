"""Learning-rate schedules by name: timm's, sized in optimizer updates on the epoch clock."""
from __future__ import annotations

import pytest
import torch

from maskds.core.errors import UserError
from maskds.config.keys import TrainConfig
from maskds.training.schedule import SCHEDULERS, build_schedule


def lr_at(schedule, epoch: int, update: int) -> float:
    schedule.step(epoch, update)
    return schedule.scheduler.optimizer.param_groups[0]["lr"]


def make(name: str, batches: int = 10, **kw):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return build_schedule(opt, 4, 0.5, 1.0, 1e-3, batches, 1, name, **kw)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_warms_up_from_a_hundredth_and_reaches_about_the_full_rate(name):
    kw = {"decay_epochs": 1.0, "decay_rate": 0.5, "decay_milestones": (2, 3)}
    s = make(name, **kw)
    assert lr_at(s, 0, 0) == pytest.approx(0.01)
    assert 0.9 < max(lr_at(s, e, u) for e in range(4) for u in range(10)) <= 1.0  # poly decays right away


def test_step_and_multistep_decay_at_their_epochs_and_cosine_ends_at_min_lr():
    step = make("step", decay_epochs=1.0, decay_rate=0.5)
    assert [round(lr_at(step, e, 5), 4) for e in range(4)] == [1.0, 0.5, 0.25, 0.125]
    multi = make("multistep", decay_milestones=(2, 3), decay_rate=0.5)
    assert [round(lr_at(multi, e, 5), 4) for e in range(4)] == [1.0, 1.0, 0.5, 0.25]
    assert lr_at(make("cosine"), 4, 0) == pytest.approx(1e-3)


def test_a_schedule_rebuilt_for_another_process_count_continues_at_the_same_epoch():
    """Resume under another process count: the same epoch, other updates per epoch, the same rate."""
    one, two = make("step", batches=10, decay_epochs=1.0, decay_rate=0.5), make("step", batches=5, decay_epochs=1.0,
                                                                                  decay_rate=0.5)
    assert lr_at(one, 2, 0) == pytest.approx(lr_at(two, 2, 0)) == pytest.approx(0.25)


@pytest.mark.parametrize("values, named", [
    ({"scheduler": "onecycle"}, "scheduler: must be one of cosine, tanh"),
    ({"scheduler": "step"}, "scheduler step needs decay_epochs > 0"),
    ({"scheduler": "multistep"}, "scheduler multistep needs the epochs"),
])
def test_unknown_or_incomplete_schedules_are_refused_naming_the_key(values, named):
    with pytest.raises(UserError) as err:
        TrainConfig.from_dict(values)
    assert named in str(err.value) or any(named in p for p in err.value.problems)


def test_plateau_decays_after_patience_epochs_without_a_better_f1_and_floors_at_min_lr():
    from maskds.training.schedule import plateau_step
    from maskds.training.state import RunProgress

    progress = RunProgress()
    decays = [plateau_step(progress, f1, patience=2) for f1 in (0.3, 0.4, 0.4, 0.35, 0.5, 0.2, 0.1, 0.1, 0.1)]
    assert decays == [False, False, False, True, False, False, True, False, True]
    assert progress.plateau_decays == 3 and progress.plateau_best == 0.5
    s = make("plateau")
    s.factor = 0.5 ** 3
    assert lr_at(s, 2, 0) == pytest.approx(0.125)
    s.factor = 1e-6
    assert lr_at(s, 2, 0) == pytest.approx(1e-3)  # min_lr
