"""Cache build images/s: `maskds build` on synthetic raw data, for 1 and N worker processes.

    python bench/build.py [--persons 120] [--size 384 288] [--num-proc 1 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from maskds.data.cache import build_cache  # noqa: E402

from common import command, machine, synthetic_data  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="raw data root (default: synthesize --persons)")
    p.add_argument("--persons", type=int, default=120)
    p.add_argument("--size", type=int, nargs=2, default=[384, 288], metavar=("H", "W"))
    p.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    data = a.data or synthetic_data(a.persons)
    n_images = sum(1 for f in (data / "train" / "images").rglob("*") if f.is_file() and not f.name.startswith("."))
    n_images += sum(1 for f in (data / "eval" / "images").glob("*") if f.is_file())
    results = {}
    for n in a.num_proc:
        out = Path(tempfile.mkdtemp(prefix="maskds-build-bench-")) / "cache"
        start = time.perf_counter()
        build_cache(data, out, size_hw=tuple(a.size), folds=5, seed=42, corrections="default", num_proc=n)
        results[f"num_proc_{n}_img_s"] = round(n_images / (time.perf_counter() - start), 1)
        shutil.rmtree(out.parent)
    if a.json:
        print(json.dumps({"images": n_images, **results}))
        return 0
    print(f"command: {command()}\nmachine: {machine()}")
    print(f"{n_images} images (train + eval) at {a.size[0]}x{a.size[1]}, validation + decode + resize + JPEG + arrow write")
    for k, v in results.items():
        print(f"{k.replace('_img_s', '').replace('_', ' ')}: {v} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
