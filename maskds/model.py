"""The classifier: a timm backbone (no classifier) + dropout + a linear head of 8 (3|2|3) or 18 logits."""
from __future__ import annotations

from typing import Sequence

import timm
import torch
from torch import nn

from .errors import UserError
from .heads import check_head, num_outputs


class MaskClassifier(nn.Module):
    """Backbone features -> dropout -> logits [B, heads.num_outputs(head)].

    For `multihead` the 8 columns are the mask (3), gender (2) and age (3) heads side by side
    (`heads.SLICES`): one Linear is the same as three separate ones and one matmul cheaper.
    """

    def __init__(self, backbone: nn.Module, head: str, drop_rate: float = 0.0):
        super().__init__()
        check_head(head)
        self.head_type = head
        self.backbone = backbone
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(backbone.num_features, num_outputs(head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(self.backbone(x)))


def create_model(
    model_name: str,
    head: str,
    pretrained: str = "none",
    pretrained_mapping: str = "auto",
    drop_rate: float = 0.0,
) -> nn.Module:
    """Build the classifier on `timm.create_model(model_name)`.

    pretrained: "hub" (timm's download), "none", or a local file / "preset:<name>" loaded by
    `maskds.pretrained.load_backbone_weights` with `pretrained_mapping`.
    """
    if not timm.is_model(model_name):
        raise UserError(f"model: {model_name!r} is not a timm model name (see timm.list_models())")
    backbone = timm.create_model(model_name, pretrained=(pretrained == "hub"), num_classes=0)
    if pretrained not in ("hub", "none"):
        from .pretrained import load_backbone_weights  # only needed for local / preset weights

        load_backbone_weights(backbone, source=pretrained, mapping=pretrained_mapping)
    return MaskClassifier(backbone, head, drop_rate)


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
