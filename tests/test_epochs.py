"""tuning.epochs: the (step, EMA F1) pairs a trial reports, read from its folds' metrics files as they grow."""
from __future__ import annotations

import json
import time

from maskds.tuning.epochs import EpochReader, most_epochs
from maskds.tuning.space import parse_param


def test_epochs_are_reported_at_steps_of_the_folds_training_order(tmp_path):
    def write(fold, epochs):
        d = tmp_path / f"fold{fold}"
        d.mkdir(exist_ok=True)
        (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "ema": {"macro_f1": f}}) + "\n"
                                                 for e, f in epochs))

    reader = EpochReader(tmp_path, 2)
    write(3, [(0, 0.1)])  # folds=[3, 0]: fold 3 trains first
    assert reader.new() == [(0, 0.1)]
    write(3, [(0, 0.1), (1, 0.2)])
    time.sleep(0.05)
    write(0, [(0, 0.3)])
    (tmp_path / "fold0" / "metrics.jsonl").write_text(
        (tmp_path / "fold0" / "metrics.jsonl").read_text() + '{"epoch": 1, "ema"')  # a line being written
    assert reader.new() == [(1, 0.2), (2, 0.3)]
    assert reader.new() == []
    (tmp_path / "fold0" / "metrics.jsonl").write_text(  # ... cut off right after a nested dict's brace
        (tmp_path / "fold0" / "metrics.jsonl").read_text() + ': {"macro_f1": 0.4}')
    assert reader.new() == []
    (tmp_path / "fold0" / "metrics.jsonl").write_text((tmp_path / "fold0" / "metrics.jsonl").read_text() + "}\n")
    assert reader.new() == [(3, 0.4)]


def test_the_stride_is_the_most_epochs_any_trial_of_the_study_trains():
    assert most_epochs(None, ["epochs=3"], []) == 3
    assert most_epochs(None, [], [parse_param("epochs", [2, 5, 4], "space")]) == 5
    assert most_epochs(None, [], [parse_param("epochs", {"low": 2, "high": 6}, "space")]) == 6
