"""The model's input and layout in infer.py: padded batches, channels_last on the CPU and CUDA, same answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_inference import make_eval_dir, make_run


@pytest.fixture
def eval_dir(tmp_path):
    return make_eval_dir(tmp_path / "eval")


def test_padded_batches_have_one_shape_and_the_padding_is_cut_from_the_answers():
    from maskds.inference.predict import to_model_input

    x = torch.randint(0, 255, (5, 3, 8, 6), dtype=torch.uint8)
    padded = to_model_input(x, torch.device("cpu"), 8, pad=True)
    assert padded.shape == (8, 3, 8, 6) and torch.equal(padded[:5], x) and not padded[5:].any()
    assert to_model_input(x, torch.device("cpu"), 8, pad=False).shape == (5, 3, 8, 6)
    last = to_model_input(x, torch.device("cpu"), 8, pad=False, channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, x)


def test_channels_last_is_on_for_the_cpu_and_cuda_unless_told_not_to():
    from maskds.inference.models import use_channels_last

    assert use_channels_last(torch.device("cpu")) and use_channels_last(torch.device("cuda"))
    assert not use_channels_last(torch.device("mps"))  # not measured there
    assert not use_channels_last(torch.device("cpu"), "off") and use_channels_last(torch.device("mps"), "on")


def test_channels_last_predicts_what_the_default_layout_predicts(tmp_path, eval_dir):
    from maskds.inference.inputs import read_info
    from maskds.inference.models import load_member, make_accelerator
    from maskds.inference.predict import predict_runs

    run = make_run(tmp_path / "run", folds=(0,))
    _, paths = read_info(eval_dir)
    accelerator = make_accelerator("no")
    got = {}
    for layout in ("on", "off"):  # the BatchNorms folded in both (the CPU's default)
        member = load_member(0, 0, run / "fold0" / "best.safetensors", accelerator.device, channels_last=layout)
        stem = next(p for p in member.model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
        assert member.channels_last == stem.is_contiguous(memory_format=torch.channels_last) == (layout == "on")
        got[layout] = predict_runs([member], paths, accelerator, 3, 0, ("orig", "hflip"))[0]
    for k in got["on"]:
        np.testing.assert_allclose(got["on"][k], got["off"][k], atol=1e-5, err_msg=k)
    assert got["on"]["class"].argmax(1).tolist() == got["off"]["class"].argmax(1).tolist()
    assert len(set(got["on"]["class"].argmax(1).tolist())) > 1  # not one answer for every image
