"""BatchNorm folding for inference: the same function, fewer layers, and no folding where it would be wrong."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from maskds.inference.fold import conv_bn_pairs, fold_batchnorms
from maskds.inference.models import load_member, should_fold
from maskds.model.checkpoint import resolved_metadata, save_best
from maskds.config.keys import TrainConfig
from maskds.model.network import create_model


def randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 40, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["test_efficientnet", "tf_efficientnet_lite0"])
def test_folded_model_computes_the_same_function_without_batchnorms(name):
    model = randomize_batchnorms(create_model(name, "multihead")).eval()
    before = count_bn(model)
    folded, n = fold_batchnorms(model, images(2, 0))
    assert before > 0 and n == before and count_bn(folded) == 0
    assert count_bn(model) == before  # the original is left as it was
    with torch.no_grad():
        x = images(4, 1)  # not the input the fold was checked on
        ref, out = model(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


class ReadTwice(nn.Module):
    """The convolution's output feeds the BatchNorm and a skip connection: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x.float())
        return (self.bn(y) + y).mean((2, 3))


class InPlaceBetween(nn.Module):
    """An in-place ReLU between the convolution and the BatchNorm: the same tensor object, other values."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.act(self.conv(x.float()))).mean((2, 3))


class SharedConv(nn.Module):
    """One convolution called twice, each time into its own BatchNorm: it cannot hold both folds."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm2d(3)

    def forward(self, x):
        x = x.float()
        return (self.bn1(self.conv(x)) + self.bn2(self.conv(x))).mean((2, 3))


def test_a_fold_that_would_change_the_output_is_refused():
    model = randomize_batchnorms(ReadTwice()).eval()
    assert conv_bn_pairs(model, images(2, 0)) == [("conv", "bn")]  # the trace pairs them ...
    with pytest.warns(UserWarning, match="not folded"):
        folded, n = fold_batchnorms(model, images(2, 0))
    assert folded is model and n == 0 and count_bn(model) == 1  # ... and the output check refuses the fold


def test_an_in_place_change_between_convolution_and_batchnorm_is_not_paired():
    model = randomize_batchnorms(InPlaceBetween()).eval()
    assert conv_bn_pairs(model, images(2, 0)) == []
    assert fold_batchnorms(model, images(2, 0)) == (model, 0)


def test_a_convolution_called_twice_is_not_paired():
    model = randomize_batchnorms(SharedConv()).eval()
    assert conv_bn_pairs(model, images(2, 0)) == []
    assert fold_batchnorms(model, images(2, 0)) == (model, 0)


def test_folding_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorms(create_model("test_efficientnet", "multihead").train(), images(2, 0))


def test_folding_is_chosen_where_it_measured_faster():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert should_fold(cpu, compile=False) and should_fold(cuda, compile=True)
    assert not should_fold(cuda, compile=False)  # eager cuDNN runs the unfolded b3 faster


def test_load_member_folds_on_the_cpu_unless_told_not_to(tmp_path):
    config = TrainConfig(model="test_efficientnet", pretrained="none", image_size=[40, 32])
    model = randomize_batchnorms(create_model("test_efficientnet", "multihead")).eval()
    resolved = resolved_metadata(config, model, [48, 36])
    path = tmp_path / "fold0" / "best.safetensors"
    path.parent.mkdir()
    save_best(path, model.state_dict(), config, resolved, {"fold": 0, "epoch": 0, "metrics": {}})
    cpu = torch.device("cpu")
    auto, off = load_member(0, 0, path, cpu), load_member(0, 0, path, cpu, fold_bn="off")
    assert count_bn(auto.model) == 0 and count_bn(off.model) == count_bn(model) > 0
    with torch.no_grad():
        x = images(3, 2)
        ref = off.model(x)
        assert torch.allclose(auto.model(x), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
