"""Training-loader images/s: maskds (arrow cache, decode + augment in workers) vs the baseline way.

The baseline way (the official baseline's): PIL-open the original 384x512 file every time, resize,
ToTensor, Normalize. Both loaders give the same output size, batch size and worker count, and are
measured side by side in one run (alternating, best of --repeats). maskds' loader ships uint8
tensors and normalizes inside the model, on the device; the baseline normalizes in its workers.

    python bench/loader.py [--json] [--persons 200] [--config configs/demo.yaml]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from PIL import Image  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from maskds.config.keys import load_config  # noqa: E402
from maskds.training.datasets import CachedImages, class_labels, fold_split, load_train_split, make_loader  # noqa: E402
from maskds.model.network import create_model, resolve_data_config  # noqa: E402
from maskds.model.transforms import train_transform  # noqa: E402

from common import command, machine, synthetic_cache, synthetic_data  # noqa: E402


class BaselineImages(Dataset):
    """The baseline way: open the original file with PIL each time, resize, to tensor, normalize."""

    def __init__(self, paths: list[Path], labels: list[int], size_hw, mean, std):
        self.paths, self.labels = paths, labels
        tail = [T.ToTensor(), T.Normalize(mean, std)] if mean is not None else [T.PILToTensor()]
        self.transform = T.Compose([T.Resize(tuple(size_hw)), *tail])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(Image.open(self.paths[i]).convert("RGB")), self.labels[i]


def images_per_s(loader: DataLoader, min_images: int) -> float:
    """Images/s over whole passes of the loader until at least `min_images`, after one warm-up batch."""
    it = iter(loader)
    next(it)  # workers started and warm
    seen, start = 0, time.perf_counter()
    while seen < min_images:
        for x, _ in it:
            seen += x.shape[0]
        it = iter(loader)
    return seen / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml", help="train config whose loader settings are used")
    p.add_argument("--data", type=Path, default=None, help="raw data root (default: synthesize --persons)")
    p.add_argument("--cache", type=Path, default=None, help="cache of --data (default: build it)")
    p.add_argument("--cache-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="cache size to build (default: the config's image_size)")
    p.add_argument("--persons", type=int, default=200, help="synthetic persons when --data is not given")
    p.add_argument("--images", type=int, default=3000, help="images per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    a = p.parse_args(argv)

    cfg = load_config(a.config, [f"num_workers={a.workers}"] if a.workers is not None else [])
    dc = resolve_data_config(create_model(cfg.model, cfg.head), cfg.image_size, cfg.mean, cfg.std)
    size = dc["image_size"]
    with contextlib.redirect_stdout(sys.stderr if a.json else sys.stdout):  # --json: one line on stdout
        data = a.data or synthetic_data(a.persons)
        cache = a.cache or synthetic_cache(data, tuple(a.cache_size or size))
    table, _ = load_train_split(cache)
    labels = class_labels(table, cfg.age_thresholds)
    rows = fold_split(table, 0).train
    ours = CachedImages(table, rows, labels, train_transform(size, cfg.augment))
    paths = [data / table[int(r)]["path"] for r in rows]
    base = BaselineImages(paths, [int(labels[r]) for r in rows], size, dc["mean"], dc["std"])
    loaders = {name: make_loader(ds, cfg.batch_size, train=True, num_workers=cfg.num_workers, device=torch.device("cpu"))
               for name, ds in (("ours", ours), ("baseline", base))}
    best = {"ours": 0.0, "baseline": 0.0}
    for _ in range(a.repeats):  # alternate so both see the same machine load
        for name, loader in loaders.items():
            best[name] = max(best[name], images_per_s(loader, a.images))
    result = {"ours_img_s": round(best["ours"], 1), "baseline_img_s": round(best["baseline"], 1),
              "ratio": round(best["ours"] / best["baseline"], 2)}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"command: {command()}\nmachine: {machine()}")
    print(f"output {size[0]}x{size[1]}, batch {cfg.batch_size}, workers {cfg.num_workers}, "
          f"augment {cfg.augment!r}, {len(rows)} training images, best of {a.repeats}")
    print(f"maskds loader (cache {Path(cache).name}): {result['ours_img_s']} img/s")
    print(f"baseline loader (PIL from original files): {result['baseline_img_s']} img/s")
    print(f"ratio: {result['ratio']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
