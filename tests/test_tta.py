"""Test-time augmentation views by name: parsing, geometry, and their average in infer.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from maskds.core.probabilities import PROB_COLUMNS
from maskds.cli.infer import main

from test_inference import make_eval_dir, make_run, manual_run_probs, read_probs_frame


@pytest.fixture
def eval_dir(tmp_path):
    return make_eval_dir(tmp_path / "eval")


def test_tta_presets_and_view_lists_parse_and_unknown_views_are_refused():
    from maskds.core.errors import UserError
    from maskds.inference.tta import parse_tta

    assert parse_tta("none") == ("orig",) and parse_tta("hflip") == ("orig", "hflip")
    assert parse_tta("scales") == ("orig", "hflip", "zoom", "zoom_hflip", "shrink", "shrink_hflip")
    assert parse_tta("orig, zoom_hflip") == ("orig", "zoom_hflip")
    for bad in ("hflip,spin", "", "orig,orig"):
        with pytest.raises(UserError, match="orig, hflip, zoom"):
            parse_tta(bad)


def test_zoom_enlarges_the_centre_and_shrink_adds_a_zero_border():
    from maskds.inference.tta import VIEWS

    x = torch.full((1, 3, 44, 33), 100, dtype=torch.uint8)
    x[..., 0, :] = 255  # a bright top row: cropped away by zoom
    zoom, shrink = VIEWS["zoom"](x), VIEWS["shrink"](x)
    assert zoom.shape == shrink.shape == (1, 3, 44, 33)
    assert torch.allclose(zoom, torch.full_like(zoom, 100.0))
    assert shrink[..., :2, :].abs().sum() == 0 and shrink[..., :, :1].abs().sum() == 0  # 40x30 centred in 44x33
    assert torch.allclose(shrink[..., 22, 5:28], torch.full((1, 3, 23), 100.0))
    assert torch.equal(VIEWS["zoom_hflip"](x), VIEWS["zoom"](x).flip(-1)) and torch.equal(VIEWS["orig"](x), x)


def test_named_tta_views_average_as_computed_by_hand(tmp_path, eval_dir):
    from maskds.inference.tta import VIEWS

    run = make_run(tmp_path / "run", folds=(0,))
    out = tmp_path / "sub.csv"
    assert main(["--run", str(run), "--data", str(eval_dir), "--out", str(out), "--tta", "orig,zoom,shrink_hflip",
                 "--batch-size", "4", "--num-workers", "0"]) == 0
    ids = pd.read_csv(eval_dir / "info.csv")["ImageID"].tolist()
    probs = read_probs_frame(tmp_path / "sub.probs.csv", ids)
    expect = manual_run_probs(run, eval_dir, ids, tta=False,
                              views=[VIEWS["orig"], VIEWS["zoom"], lambda x: VIEWS["shrink"](x).flip(-1)])
    cols = [c for c in PROB_COLUMNS if c.startswith("class_")]
    np.testing.assert_allclose(probs[cols].to_numpy(), expect["class"], atol=1e-5)
    plain = manual_run_probs(run, eval_dir, ids, tta=False)
    assert not np.allclose(plain["class"], expect["class"], atol=1e-4)  # the views changed the answer
