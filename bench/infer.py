"""Inference images/s: infer.py's prediction (decode once, eval transform, soft-voting bookkeeping,
process sharding) against a bare eval loop (PIL open, resize, to tensor, forward, softmax)
on the same model, batch size, worker count and input size, no TTA. Side by side, best of --repeats.

    python bench/infer.py [--model tf_efficientnet_lite0] [--size 192 144] [--cache-size 192 144] [--json]

The submission job: `--folds 5 --tta hflip --images 12600 --ours-only` times infer.py's prediction
of the competition's eval set with every fold and TTA view (images repeat the eval folder's files
up to --images; each is decoded and predicted anew), in the precision infer.py picks (`--precision`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from maskds.core.probabilities import probabilities  # noqa: E402
from maskds.inference.models import load_member, make_accelerator  # noqa: E402
from maskds.inference.predict import predict_runs  # noqa: E402
from maskds.inference.tta import parse_tta  # noqa: E402
from maskds.model.checkpoint import resolved_metadata, save_best  # noqa: E402
from maskds.config.keys import TrainConfig  # noqa: E402
from maskds.model.network import create_model  # noqa: E402

from common import bench_precision, command, machine, synthetic_data  # noqa: E402
from loader import BaselineImages  # noqa: E402


def fake_run(model_name: str, size, cache_size, folds: int = 1) -> tuple[Path, dict]:
    """A run folder with `folds` untrained checkpoints (speed does not depend on the weights)."""
    run = Path(tempfile.mkdtemp(prefix="maskds-infer-bench-")) / "run"
    cfg = TrainConfig(model=model_name, pretrained="none", image_size=list(size))
    for k in range(folds):
        (run / f"fold{k}").mkdir(parents=True)
        model = create_model(model_name, "multihead")
        resolved = resolved_metadata(cfg, model, list(cache_size))
        save_best(run / f"fold{k}" / "best.safetensors", model.state_dict(), cfg, resolved,
                  {"fold": k, "epoch": 0, "metrics": {}})
    return run, resolved


def ours(run: Path, paths, batch: int, workers: int, folds: int = 1, views: tuple = ("orig",), precision: str = "auto",
         compile: bool = False, fold_bn: str = "auto") -> tuple[float, float]:
    """(images/s, seconds) of infer.py's prediction: load every fold, then predict (compiling included)."""
    acc = make_accelerator(precision)
    start = time.perf_counter()
    members = [load_member(0, k, run / f"fold{k}" / "best.safetensors", acc.device, compile, fold_bn)
               for k in range(folds)]
    predict_runs(members, paths, acc, batch, workers, views=views, pad=compile)
    seconds = time.perf_counter() - start
    return len(paths) / seconds, seconds


@torch.inference_mode()
def bare(model_name: str, resolved: dict, paths, batch: int, workers: int, device: str, precision: str) -> float:
    model = create_model(model_name, "multihead").to(device).eval()
    ds = BaselineImages(paths, [0] * len(paths), resolved["image_size"], None, None)  # the model normalizes
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    start = time.perf_counter()
    for x, _ in DataLoader(ds, batch_size=batch, num_workers=workers):
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x.to(device))
        probabilities(logits, "multihead")["class"].cpu()
    return len(paths) / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, nargs=2, default=[192, 144], metavar=("H", "W"))
    p.add_argument("--cache-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="the cache size the run was trained on (default: --size)")
    p.add_argument("--data", type=Path, default=None, help="raw data root with eval/ (default: synthesize)")
    p.add_argument("--persons", type=int, default=120, help="synthetic persons (eval = persons / 4)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"],
                   help="mixed precision of both sides (infer.py takes it from accelerate); on a CPU without "
                   "native bf16, bf16 runs fp32 as in infer.py")
    p.add_argument("--folds", type=int, default=1, help="fold checkpoints infer.py soft-votes (--ours-only)")
    p.add_argument("--tta", default="none", help="infer.py's TTA preset or views (--ours-only)")
    p.add_argument("--images", type=int, default=0, help="predict this many images, repeating the eval files")
    p.add_argument("--compile", action="store_true", help="infer.py --compile (--ours-only)")
    p.add_argument("--fold-bn", choices=["auto", "on", "off"], default="auto", help="infer.py --fold-bn")
    p.add_argument("--ours-only", action="store_true", help="time infer.py's prediction alone, with all folds")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a.precision = bench_precision(a.precision, device)  # infer.py's: fp32 on a CPU that would emulate bf16
    os.environ["ACCELERATE_MIXED_PRECISION"] = a.precision
    data = a.data or synthetic_data(a.persons)
    info = pd.read_csv(data / "eval" / "info.csv", dtype=str)
    paths = [data / "eval" / "images" / i for i in info["ImageID"]]
    if a.images:
        paths = [paths[i % len(paths)] for i in range(a.images)]
    if a.ours_only:
        return submission_job(a, paths)
    run, resolved = fake_run(a.model, a.size, a.cache_size or a.size)
    best = {"ours": 0.0, "bare": 0.0}
    for _ in range(a.repeats):
        best["bare"] = max(best["bare"], bare(a.model, resolved, paths, a.batch, a.workers, device, a.precision))
        best["ours"] = max(best["ours"], ours(run, paths, a.batch, a.workers, precision=a.precision)[0])
    result = {"precision": a.precision, "ours_img_s": round(best["ours"], 1), "bare_img_s": round(best["bare"], 1),
              "ratio": round(best["ours"] / best["bare"], 2)}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"command: {command()}\nmachine: {machine()}")
    print(f"{a.model} at {a.size[0]}x{a.size[1]}, {len(paths)} eval images, batch {a.batch}, "
          f"workers {a.workers}, {device}, precision {a.precision}, no TTA, best of {a.repeats}")
    print(f"infer.py: {result['ours_img_s']} img/s; bare loop: {result['bare_img_s']} img/s; ratio {result['ratio']}")
    return 0


def submission_job(a, paths) -> int:
    """infer.py's prediction of `paths` with --folds folds and --tta views, compiling included."""
    views = parse_tta(a.tta)
    run, _ = fake_run(a.model, a.size, a.cache_size or a.size, a.folds)
    each = [ours(run, paths, a.batch, a.workers, a.folds, views, a.precision, a.compile, a.fold_bn)[1]
            for _ in range(a.repeats)]
    seconds = min(each)  # with --compile the first repeat also compiles; later ones reuse the process's graphs
    ips = len(paths) / seconds
    result = {"seconds": round(seconds, 2), "images_per_s": round(ips, 1),
              "model_images_per_s": round(ips * a.folds * len(views), 1), "seconds_each": [round(s, 2) for s in each]}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"command: {command()}\nmachine: {machine()}")
    print(f"infer.py: {len(paths)} images x {a.folds} fold(s) x {len(views)} view(s), "
          f"{a.model} at {a.size[0]}x{a.size[1]}, "
          f"batch {a.batch}, workers {a.workers}, precision {a.precision}, compile {a.compile}, "
          f"fold_bn {a.fold_bn}, best of {a.repeats}")
    print(f"{result['seconds']} s ({result['images_per_s']} images/s, "
          f"{result['model_images_per_s']} forward images/s); each repeat: {result['seconds_each']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
