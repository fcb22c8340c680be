"""Model tests: logits width per head type, weights round trip, pretrained dispatch, data config."""
import pytest
import torch

from maskds.core.errors import UserError
from maskds.core.probabilities import HeadSpec
from maskds.model.network import create_model, resolve_data_config


@pytest.mark.parametrize("head", ["multihead", "single"])
def test_logits_have_the_head_types_width(head):
    model = create_model("test_efficientnet", head).eval()
    out = model(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, HeadSpec(head).num_outputs)


def test_state_dict_loads_into_a_fresh_model_with_pretrained_none():
    a = create_model("test_efficientnet", "multihead", drop_rate=0.2).eval()
    b = create_model("test_efficientnet", "multihead", pretrained="none").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 48)
    assert torch.equal(a(x), b(x))


def test_unknown_model_name_is_a_user_error():
    with pytest.raises(UserError, match="not_a_model"):
        create_model("not_a_model", "multihead")


def test_local_weights_go_through_maskds_pretrained(monkeypatch):
    import maskds.model.pretrained

    calls = []
    monkeypatch.setattr(maskds.model.pretrained, "load_backbone_weights",
                        lambda backbone, source, mapping: calls.append((type(backbone).__name__, source, mapping)))
    create_model("test_efficientnet", "single", pretrained="/some/file.pth", pretrained_mapping="order")
    assert calls == [("EfficientNet", "/some/file.pth", "order")]


def test_data_config_values_win_else_the_models_pretrained_config():
    model = create_model("test_vit", "multihead")
    auto = resolve_data_config(model, None, None, None)
    assert auto == {"image_size": [160, 160], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    set_ = resolve_data_config(model, [64, 48], [0.1, 0.2, 0.3], [1, 1, 1])
    assert set_ == {"image_size": [64, 48], "mean": [0.1, 0.2, 0.3], "std": [1.0, 1.0, 1.0]}


def test_the_model_normalizes_uint8_images_with_its_mean_and_std():
    model = create_model("test_efficientnet", "multihead", mean=[0.5, 0.4, 0.3], std=[0.25, 0.5, 1.0])
    img = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    out = model.normalize(img)
    expected = torch.tensor([(1 - 0.5) / 0.25, (1 - 0.4) / 0.5, (1 - 0.3) / 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert torch.allclose(out, expected)
    assert torch.allclose(model.state_dict()["normalize.std"].flatten(), torch.tensor([63.75, 127.5, 255.0]))


def test_default_normalization_is_the_backbones_pretrained_config():
    model = create_model("tf_efficientnet_lite0", "single")  # timm's tf lite models use mean = std = 0.5
    assert torch.allclose(model.normalize.mean.flatten(), torch.full((3,), 127.5))


def test_drop_path_rate_reaches_the_backbone():
    rates = [m.drop_prob for m in create_model("test_efficientnet", "multihead", drop_path_rate=0.2).modules()
             if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2, abs=0.05) and max(rates) > 0
    assert not [m for m in create_model("test_efficientnet", "multihead").modules() if type(m).__name__ == "DropPath"]


# Tiny members of timm's families; MobileNetV3/V4 and GhostNet have a pre-logits layer (head_hidden_size
# features, not num_features), the ViT a fixed input size (built at the training size).
FAMILIES = ["test_resnet", "test_efficientnet", "mobilenetv3_small_050", "mobilenetv4_conv_small", "ghostnet_100",
            "test_convnext", "vit_tiny_patch16_224"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_trains_one_step_without_weights(name):
    torch.manual_seed(0)
    model = create_model(name, "multihead", image_size=[64, 48]).train()
    images, labels = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8), torch.tensor([0, 2])
    before = model.classifier.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(images)
    assert logits.shape == (2, HeadSpec("multihead").num_outputs)
    torch.nn.functional.cross_entropy(logits[:, :3], labels).backward()
    optimizer.step()
    assert not torch.equal(model.classifier.weight, before)


def test_hub_weights_without_a_route_to_the_hub_are_one_clear_error(tmp_path, tiny_cache):
    import subprocess
    import sys

    from train_helpers import ROOT, TINY, env

    offline = {**env(), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_hub_cache")}  # as unreachable
    args = [f"cache={tiny_cache}", f"output_dir={tmp_path / 'runs'}", "name=hub", "folds=[0]", "epochs=1",
            *TINY, "pretrained=hub"]  # the later pretrained wins over TINY's
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=offline, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, r.stderr[-3000:]
    for named in ("'test_efficientnet'", "hub could not be reached", "pretrained=/path/", "preset:",
                  "HF_HUB_OFFLINE=1"):
        assert named in r.stderr, r.stderr
    assert not (tmp_path / "runs" / "hub").exists()
