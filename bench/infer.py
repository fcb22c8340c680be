"""Inference speed: infer.py's prediction (decode once, eval transform, soft-voting bookkeeping,
process sharding) against two references on the same model, batch size, views (--tta), precision and
thread count, side by side, best of --repeats:
- a bare eval loop (PIL open, resize, to tensor, forward, softmax; --workers loader workers), in images/s;
- the model's own speed: a bare forward loop on already-decoded uint8 batches at the model's input size,
  BatchNorms folded and channels_last (what infer.py's CPU path runs; on the CPU under the allocator
  setting infer.py's prediction makes, see --allocator), in forward images/s (TTA views counted);
  `forward_ratio` = infer.py's forward images/s (its prediction alone, not the model load) / it.

    python bench/infer.py [--model tf_efficientnet_lite0] [--size 192 144] [--cache-size 192 144] [--json]
    python bench/infer.py --size 160 120 --cache-size 160 120 --face-crop fixed --tta hflip --images 1280 --json
        # the CPU recipe (docs/benchmarks.md 10); infer.py's CPU loop before issue 30:
        # --channels-last off --allocator default --worker-priority default

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
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from maskds.core import memory  # noqa: E402
from maskds.core.images import cached_pixels, single_threaded_opencv  # noqa: E402
from maskds.core.probabilities import probabilities  # noqa: E402
from maskds.inference.fold import fold_batchnorms  # noqa: E402
from maskds.inference.models import build_transform, load_member, make_accelerator, view_params  # noqa: E402
from maskds.inference.predict import predict_runs  # noqa: E402
from maskds.inference.tta import VIEWS, parse_tta  # noqa: E402
from maskds.model.checkpoint import read_best, resolved_metadata, save_best  # noqa: E402
from maskds.config.keys import TrainConfig  # noqa: E402
from maskds.model.network import create_model  # noqa: E402

from common import bench_precision, command, machine, synthetic_data  # noqa: E402
from loader import BaselineImages  # noqa: E402


def fake_run(model_name: str, size, cache_size, folds: int = 1, face_crop: tuple | None = None) -> tuple[Path, dict]:
    """A run folder with `folds` untrained checkpoints (speed does not depend on the weights)."""
    run = Path(tempfile.mkdtemp(prefix="maskds-infer-bench-")) / "run"
    cfg = TrainConfig(model=model_name, pretrained="none", image_size=list(size))
    for k in range(folds):
        (run / f"fold{k}").mkdir(parents=True)
        model = create_model(model_name, "multihead")
        resolved = resolved_metadata(cfg, model, list(cache_size), face_crop)
        save_best(run / f"fold{k}" / "best.safetensors", model.state_dict(), cfg, resolved,
                  {"fold": k, "epoch": 0, "metrics": {}})
    return run, resolved


def ours(run: Path, paths, batch: int, workers: int, folds: int = 1, views: tuple = ("orig",), precision: str = "auto",
         compile: bool = False, fold_bn: str = "auto", channels_last: str = "auto") -> tuple[float, float, float]:
    """(images/s, seconds, seconds predicting) of infer.py's prediction: load every fold, then predict
    (compiling included); the last: `predict_runs` alone, as infer.py times it."""
    acc = make_accelerator(precision)
    start = time.perf_counter()
    members = [load_member(0, k, run / f"fold{k}" / "best.safetensors", acc.device, compile, fold_bn, channels_last)
               for k in range(folds)]
    loaded = time.perf_counter()
    predict_runs(members, paths, acc, batch, workers, views=views, pad=compile)
    end = time.perf_counter()
    return len(paths) / (end - start), end - start, end - loaded


@torch.inference_mode()
def bare(model_name: str, resolved: dict, paths, batch: int, workers: int, device: str, precision: str,
         views: tuple = ("orig",)) -> float:
    """Images/s of a bare eval loop: PIL decode in loader workers, forward of each view, softmax."""
    model = create_model(model_name, "multihead").to(device).eval()
    ds = BaselineImages(paths, [0] * len(paths), resolved["image_size"], None, None)  # the model normalizes
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    start = time.perf_counter()
    with memory.freed_memory_kept():
        for x, _ in DataLoader(ds, batch_size=batch, num_workers=workers):
            for view in views:
                with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = model(VIEWS[view](x.to(device)))
                probabilities(logits, "multihead")["class"].cpu()
    return len(paths) / (time.perf_counter() - start)


def decoded_batches(paths, resolved: dict, batch: int, device: str) -> list[torch.Tensor]:
    """The images as infer.py's loader gives them (cache pixels, eval transform), in uint8 batches on
    `device`, channels_last: decoded here, before any clock starts."""
    view = view_params(resolved, "bench")
    transform = build_transform(view)
    images = [transform(image=cached_pixels(p, view.cache_size, view.crop))["image"] for p in paths]
    return [torch.stack(images[s:s + batch]).to(device).contiguous(memory_format=torch.channels_last)
            for s in range(0, len(images), batch)]


def bare_forward(model_name: str, resolved: dict, batches: list[torch.Tensor], device: str, precision: str,
                 views: tuple = ("orig",)) -> float:
    """Forward images/s (views counted) of the model alone: BatchNorms folded, channels_last, on decoded
    batches, after one warm-up batch (oneDNN builds its kernels on the first call of a shape)."""
    model = create_model(model_name, "multihead", image_size=resolved["image_size"]).to(device).eval()
    model, _ = fold_batchnorms(model, batches[0][:2])  # outside inference_mode: it traces tensor versions
    with torch.inference_mode(), memory.freed_memory_kept():
        return _forwards(model.to(memory_format=torch.channels_last), batches, device, precision, views)


def _forwards(model, batches: list[torch.Tensor], device: str, precision: str, views: tuple) -> float:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None)
    with autocast:
        model(batches[0])
    start = time.perf_counter()
    for x in batches:
        for view in views:
            with autocast:
                logits = model(VIEWS[view](x))
    logits.float().sum().item()  # waits for a GPU's queue
    return sum(len(x) for x in batches) * len(views) / (time.perf_counter() - start)


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
    p.add_argument("--tta", default="none", help="infer.py's TTA preset or views (every side predicts them)")
    p.add_argument("--images", type=int, default=0, help="predict this many images, repeating the eval files")
    p.add_argument("--face-crop", choices=["none", "fixed"], default="none",
                   help="the run's cache was built with this face crop (the recipe: fixed, margin 0.15)")
    p.add_argument("--run", type=Path, default=None,
                   help="a trained run folder whose fold0 infer.py predicts with (its model, sizes and face crop; "
                   "--model, --size, --cache-size and --face-crop then unused); default: an untrained one")
    p.add_argument("--compile", action="store_true", help="infer.py --compile (--ours-only)")
    p.add_argument("--fold-bn", choices=["auto", "on", "off"], default="auto", help="infer.py's BatchNorm folding")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                   help="infer.py's model layout (`load_member`; off: the default layout, as before issue 30)")
    p.add_argument("--allocator", choices=["infer", "default"], default="infer",
                   help="infer: glibc keeps freed memory, as infer.py's prediction has it on the CPU "
                   "(`memory.freed_memory_kept`), on every side; default: glibc's defaults everywhere, "
                   "as before issue 30")
    p.add_argument("--worker-priority", choices=["infer", "default"], default="infer",
                   help="infer: infer.py's CPU loader workers at nice 19 (`memory.background_decoder`); default: "
                   "at the model's priority, as before issue 30")
    p.add_argument("--answers", action="store_true",
                   help="also predict in the default layout and count the answers that differ from channels_last's")
    p.add_argument("--ours-only", action="store_true", help="time infer.py's prediction alone, with all folds")
    p.add_argument("--json", action="store_true", help="the result as one JSON line (command and machine on stderr)")
    a = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a.precision = bench_precision(a.precision, device)  # infer.py's: fp32 on a CPU that would emulate bf16
    os.environ["ACCELERATE_MIXED_PRECISION"] = a.precision
    data = a.data or synthetic_data(a.persons)
    info = pd.read_csv(data / "eval" / "info.csv", dtype=str)
    paths = [data / "eval" / "images" / i for i in info["ImageID"]]
    if a.images:
        paths = [paths[i % len(paths)] for i in range(a.images)]
    a.face_crop = ("fixed", 0.15) if a.face_crop == "fixed" else None
    if a.allocator == "default" or device != "cpu":  # infer.py's prediction as before issue 30, and every side
        memory.freed_memory_kept = nullcontext
    if a.worker_priority == "default":
        memory.background_decoder = single_threaded_opencv
    if a.ours_only:
        return submission_job(a, paths)
    return side_by_side(a, paths, device)


def side_by_side(a, paths, device: str) -> int:
    """infer.py's prediction, the bare eval loop and the bare forward, one after another, best of --repeats."""
    views = parse_tta(a.tta)
    if a.run:
        run, resolved = a.run, read_best(a.run / "fold0" / "best.safetensors").resolved
        a.model, a.size = resolved["model"], resolved["image_size"]
    else:
        run, resolved = fake_run(a.model, a.size, a.cache_size or a.size, face_crop=a.face_crop)
    batches = decoded_batches(paths, resolved, a.batch, device)
    best = {"ours": 0.0, "ours_forward": 0.0, "bare": 0.0, "forward": 0.0}
    each = []  # forward ratio of each repeat: its two sides ran one right after the other
    for _ in range(a.repeats):
        best["bare"] = max(best["bare"], bare(a.model, resolved, paths, a.batch, a.workers, device, a.precision,
                                              views))
        images_s, _, predicting = ours(run, paths, a.batch, a.workers, views=views, precision=a.precision,
                                       fold_bn=a.fold_bn, channels_last=a.channels_last)
        forward = bare_forward(a.model, resolved, batches, device, a.precision, views)
        best["ours"] = max(best["ours"], images_s)
        best["ours_forward"] = max(best["ours_forward"], len(paths) * len(views) / predicting)
        best["forward"] = max(best["forward"], forward)
        each.append(round(len(paths) * len(views) / predicting / forward, 3))
    result = {"precision": a.precision, "threads": torch.get_num_threads(), "views": len(views),
              "channels_last": a.channels_last, "allocator": a.allocator, "worker_priority": a.worker_priority,
              "ours_img_s": round(best["ours"], 1), "bare_img_s": round(best["bare"], 1),
              "ratio": round(best["ours"] / best["bare"], 2),
              "ours_forward_s": round(best["ours_forward"], 1), "bare_forward_s": round(best["forward"], 1),
              "forward_ratio": round(best["ours_forward"] / best["forward"], 3), "forward_ratio_each": each}
    if a.answers:
        result.update(layout_answers(run, paths, a, views))
    header = f"command: {command()}\nmachine: {machine()}"
    if a.json:
        print(header, file=sys.stderr)
        print(json.dumps(result))
        return 0
    print(header)
    print(f"{a.model} at {a.size[0]}x{a.size[1]}, {len(paths)} eval images, batch {a.batch}, workers {a.workers}, "
          f"{device}, {result['threads']} threads, precision {a.precision}, views {'+'.join(views)}, "
          f"infer.py's channels_last {a.channels_last}, fold_bn {a.fold_bn}, allocator {a.allocator}, "
          f"worker priority {a.worker_priority}, best of {a.repeats}")
    print(f"infer.py: {result['ours_img_s']} img/s; bare eval loop: {result['bare_img_s']} img/s; "
          f"ratio {result['ratio']}")
    print(f"forward images/s (views counted): infer.py {result['ours_forward_s']}; bare channels_last forward on "
          f"decoded batches {result['bare_forward_s']}; forward_ratio {result['forward_ratio']} (best of each; "
          f"each repeat's: {each})")
    if a.answers:
        print(f"answers differing between channels_last and the default layout: {result['answers_differ']} of "
              f"{len(paths)} (largest probability gap {result['max_prob_gap']:.2g})")
    return 0


def layout_answers(run: Path, paths, a, views: tuple) -> dict:
    """infer.py's prediction in channels_last and in the default layout: how many answers (argmax of the
    18 classes) differ, and the largest gap between their probabilities."""
    acc = make_accelerator(a.precision)
    probs = {}
    for layout in ("on", "off"):
        member = load_member(0, 0, run / "fold0" / "best.safetensors", acc.device, fold_bn=a.fold_bn,
                             channels_last=layout)
        probs[layout] = predict_runs([member], paths, acc, a.batch, a.workers, views=views)[0]
    on, off = probs["on"], probs["off"]
    return {"answers_differ": int((on["class"].argmax(1) != off["class"].argmax(1)).sum()),
            "max_prob_gap": float(max(abs(on[k] - off[k]).max() for k in on))}


def submission_job(a, paths) -> int:
    """infer.py's prediction of `paths` with --folds folds and --tta views, compiling included."""
    views = parse_tta(a.tta)
    run, _ = fake_run(a.model, a.size, a.cache_size or a.size, a.folds, a.face_crop)
    each = [ours(run, paths, a.batch, a.workers, a.folds, views, a.precision, a.compile, a.fold_bn,
                 a.channels_last)[1] for _ in range(a.repeats)]
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
          f"fold_bn {a.fold_bn}, channels_last {a.channels_last}, best of {a.repeats}")
    print(f"{result['seconds']} s ({result['images_per_s']} images/s, "
          f"{result['model_images_per_s']} forward images/s); each repeat: {result['seconds_each']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
