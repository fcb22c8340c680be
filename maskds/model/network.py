"""The classifier: normalization + a timm backbone (no classifier) + dropout + one linear layer for every head."""
from __future__ import annotations

from typing import Sequence

import timm
import torch
from torch import nn

from maskds.core.errors import UserError
from maskds.core.probabilities import HeadSpec, as_spec


class Normalize(nn.Module):
    """(x - 255 mean) / (255 std) for uint8 (or 0..255 float) images [B, 3, H, W], on the model's device.

    Loaders ship uint8 tensors (a quarter of float32's bytes through worker pipes and to the GPU),
    and the mean/std travel inside every checkpoint's state_dict, so inference cannot get them wrong.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor([float(v) * 255.0 for v in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) * 255.0 for v in std]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class MaskClassifier(nn.Module):
    """uint8 images -> Normalize -> backbone features -> dropout -> logits [B, spec.num_outputs].

    For `multihead` the columns are the mask (3), gender (2) and age heads side by side
    (`HeadSpec.slices`): one Linear is the same as three separate ones and one matmul cheaper.
    """

    def __init__(self, backbone: nn.Module, spec: HeadSpec, drop_rate: float = 0.0,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        self.spec = spec
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(feature_width(backbone), spec.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(self.backbone(self.normalize(x))))


def feature_width(backbone: nn.Module) -> int:
    """The width of a timm backbone's output with num_classes=0: `head_hidden_size` where the head has a
    pre-logits layer (MobileNetV3/V4, GhostNet: 1280 after 960 `num_features`), else `num_features`."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def backbone_kwargs(model_name: str, image_size: Sequence[int] | None, drop_path_rate: float) -> dict:
    """Keyword arguments for timm.create_model beyond the defaults: `img_size` for a model of fixed
    input size (ViT, Swin, ...: their position embeddings are built for it), when the size is set;
    `drop_path_rate` when above 0 (not every timm model takes it)."""
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}
    cfg = timm.get_pretrained_cfg(model_name)
    if image_size is not None and cfg is not None and cfg.fixed_input_size:
        extra["img_size"] = tuple(int(v) for v in image_size)
    return extra


def build_backbone(model_name: str, hub: bool, extra: dict) -> nn.Module:
    """timm's model without a classifier; `hub`: with its weights from the Hugging Face hub (or its cache),
    and a UserError saying what to do when neither can be read."""
    if not hub:
        return timm.create_model(model_name, pretrained=False, num_classes=0, **extra)
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return timm.create_model(model_name, pretrained=True, num_classes=0, **extra)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError) as err:
        raise UserError(f"pretrained: hub: the weights of {model_name!r} are not in the hub cache and the hub could "
                        f"not be reached ({type(err).__name__}); give local weights (pretrained=/path/file or "
                        f"preset:NAME), fill the hub cache on a machine with access and set HF_HUB_OFFLINE=1 here, "
                        f"or train from scratch with pretrained=none") from None


def create_model(
    model_name: str,
    head: str | HeadSpec,
    pretrained: str = "none",
    pretrained_mapping: str = "auto",
    drop_rate: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    drop_path_rate: float = 0.0,
    image_size: Sequence[int] | None = None,
) -> nn.Module:
    """Build the classifier on `timm.create_model(model_name)`; it takes uint8 images and normalizes them.

    head: a `HeadSpec` (or a head type name for its default spec).
    pretrained: "hub" (timm's download), "none", or a local file / "preset:<name>" loaded by
    `maskds.model.pretrained.load_backbone_weights` with `pretrained_mapping`. mean/std: None = the
    backbone's pretrained config (see `resolve_data_config`). image_size: [H, W] the model is trained
    at; a model of fixed input size (a ViT) is built for it (None: its pretrained size).
    """
    if not timm.is_model(model_name):
        raise UserError(f"model: {model_name!r} is not a timm model name (see timm.list_models())")
    extra = backbone_kwargs(model_name, image_size, drop_path_rate)
    backbone = build_backbone(model_name, pretrained == "hub", extra)
    if pretrained not in ("hub", "none"):
        from maskds.model.pretrained import load_backbone_weights  # only needed for local / preset weights

        load_backbone_weights(backbone, source=pretrained, mapping=pretrained_mapping)
    norm = resolve_data_config(backbone, None, mean, std)
    return MaskClassifier(backbone, as_spec(head), drop_rate, norm["mean"], norm["std"])


def resolve_data_config(
    model: nn.Module,
    image_size: Sequence[int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> dict:
    """Input size [H, W] and normalization: config values win, else the backbone's pretrained_cfg."""
    backbone = getattr(model, "backbone", model)
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    size = list(image_size) if image_size is not None else list(cfg.get("input_size", (3, 224, 224))[1:])
    return {
        "image_size": [int(v) for v in size],
        "mean": [float(v) for v in (mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406)))],
        "std": [float(v) for v in (std if std is not None else cfg.get("std", (0.229, 0.224, 0.225)))],
    }
