"""Many external faces: `maskds import-faces` and `maskds build --extra` timed on N faces, with seconds, faces/s and
peak memory, for each N of --sizes (does the memory stay flat as N grows?).

    python bench/import_faces.py [--sizes 1000 12622 100000] [--pool DIR ...] [--persons 20] [--size 160 120]
                                 [--num-proc 2] [--work DIR] [--keep] [--json]

The N faces are a pool's images repeated under new UTKFace names (`AGE_GENDER_RACE_SERIAL.jpg.chip.jpg`: the
same age, gender and race fields, a new last field per copy), hard links (else symlinks) in a
temporary folder under --work. The pool is --pool (repeatable, e.g. ../shared/external/utkface and
../shared/external/utkface_more: real faces, never committed; the faces under --min-age are left out of it),
else 200 generated 200x200 faces named like UTKFace. Each N then runs, as a user would, in fresh processes:

    maskds import-faces SRC OUT --format utkface --min-age 18 --num-proc P
    maskds build DATA CACHE --size H W --folds 5 --face-crop fixed --extra OUT --num-proc P

DATA is `maskds synth` data of --persons persons (its images are in the build's count, not in faces/s).
Memory: the largest single process's peak RSS (ru_maxrss: the command or one of its workers), and, with psutil
(accelerate installs it), the command's main process's peak and its process tree's (summed, shared pages
counted in each process), sampled every 0.1 s. Disk: the import writes ~40 KB per face (100,000 faces: ~4 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from common import command, machine, synthetic_data  # noqa: E402

MB = 1024 * 1024


def generated_pool(folder: Path, n: int = 200, seed: int = 0) -> Path:
    """`n` face-like 200x200 JPEGs named like UTKFace (ages 18..80, both genders, races 0..4), once."""
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        age, gender, race = int(rng.integers(18, 81)), int(rng.integers(2)), int(rng.integers(5))
        pixels = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8) // 4 + np.uint8(rng.integers(40, 160))
        img = Image.fromarray(pixels)
        d = ImageDraw.Draw(img)
        skin = tuple(int(v) for v in rng.integers(120, 230, 3))
        d.ellipse((45, 30, 155, 175), fill=skin)
        for x in (75, 125):
            d.ellipse((x - 8, 85, x + 8, 97), fill=(40, 30, 30))
        d.arc((75, 120, 125, 150), 20, 160, fill=(120, 40, 40), width=4)
        img.save(folder / f"{age}_{gender}_{race}_2017{i:013d}.jpg.chip.jpg", quality=90)
    return folder


def pool_faces(pools: list[Path], min_age: int) -> list[tuple[Path, str, str, str]]:
    """(file, age, gender, race) of every pool image with a UTKFace name at least `min_age` years old."""
    out = []
    for pool in pools:
        for p in sorted(pool.iterdir()):
            fields = p.name.split("_")
            if not p.is_file() or len(fields) < 2 or not fields[0].isdigit() or fields[1][:1] not in ("0", "1"):
                continue
            race = fields[2] if len(fields) >= 4 and fields[2].isdigit() else "0"
            if int(fields[0]) >= min_age:
                out.append((p.resolve(), fields[0], fields[1][:1], race))
    return out


def repeated(faces: list[tuple[Path, str, str, str]], n: int, folder: Path) -> Path:
    """`n` UTKFace-named links in `folder`, the pool's faces in turn, each copy with a new serial field."""
    folder.mkdir(parents=True)
    for k in range(n):
        path, age, gender, race = faces[k % len(faces)]
        new = folder / f"{age}_{gender}_{race}_{k:09d}.jpg.chip.jpg"
        try:
            os.link(path, new)
        except OSError:  # another file system, no hard links there, or too many to one file (ext4: 65,000)
            os.symlink(path, new)
    return folder


# Runs the command from a small process: a child forked from this one (torch imported) would count this
# process's memory in its ru_maxrss (Linux keeps the high-water mark across exec).
WRAP = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def _sample(pid: int, peaks: dict, stop: threading.Event) -> None:
    """Peak RSS of the command (the child of `pid`, the wrapper) and of its process tree, every 0.1 s (psutil,
    which accelerate installs; nothing without it)."""
    try:
        import psutil
    except ImportError:
        return
    try:
        wrapper = psutil.Process(pid)
        while not stop.is_set():
            procs = wrapper.children(recursive=True)
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            if rss:
                peaks["main_mb"] = max(peaks.get("main_mb", 0), rss[0] / MB)
                peaks["tree_mb"] = max(peaks.get("tree_mb", 0), sum(rss) / MB)
            stop.wait(0.1)
    except psutil.Error:
        return


def timed(cmd: list[str], log: Path) -> dict:
    """Run `cmd` (output to `log`): seconds, the largest process's peak RSS (ru_maxrss), psutil's peaks."""
    peaks: dict = {}
    stop = threading.Event()
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", WRAP, *cmd], stdout=out, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=_sample, args=(proc.pid, peaks, stop), daemon=True)
        sampler.start()
        proc.wait()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); its output: {log}\n" + text[-3000:])
    maxrss_kib = int(text.strip().splitlines()[-1])  # Linux: KiB
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(maxrss_kib / 1024, 1),
            **{k: round(v, 1) for k, v in peaks.items()}}


def maskds_cmd() -> list[str]:
    script = Path(sys.executable).parent / "maskds"
    return [str(script)] if script.is_file() else [sys.executable, "-c",
                                                    "import sys; from maskds.cli.main import main; sys.exit(main())"]


def run_size(n: int, faces: list, data: Path, work: Path, a: argparse.Namespace) -> dict:
    src = repeated(faces, n, work / f"src{n}")
    out, cache = work / f"faces{n}", work / f"cache{n}"
    proc = ["--num-proc", str(a.num_proc)]
    imp = timed([*maskds_cmd(), "import-faces", str(src), str(out), "--format", "utkface", "--min-age",
                 str(a.min_age), *proc], work / f"import{n}.log")
    imported = sum(1 for _ in (out / "images").iterdir())
    print(f"  N={n}: import {imp['seconds']} s", file=sys.stderr, flush=True)
    build = timed([*maskds_cmd(), "build", str(data), str(cache), "--size", *map(str, a.size), "--folds", "5",
                   "--face-crop", "fixed", "--extra", str(out), *proc], work / f"build{n}.log")
    print(f"  N={n}: build {build['seconds']} s", file=sys.stderr, flush=True)
    meta = json.loads((cache / "maskds_cache.json").read_text())
    result = {"faces": n, "imported": imported, "cache_extra_rows": meta["counts"]["extra_images"],
              "import": {**imp, "faces_per_s": round(imported / imp["seconds"], 1)},
              "build": {**build, "faces_per_s": round(imported / build["seconds"], 1)},
              "disk_mb": {"import": round(_size(out) / MB, 1), "cache": round(_size(cache) / MB, 1)}}
    if not a.keep:
        for f in (src, out, cache):
            shutil.rmtree(f)
    return result


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 12622, 100000], help="face counts N")
    p.add_argument("--pool", type=Path, action="append", default=None, metavar="DIR",
                   help="UTKFace-named images to repeat (repeatable; default: 200 generated faces)")
    p.add_argument("--min-age", type=int, default=18, help="import-faces --min-age (default 18)")
    p.add_argument("--persons", type=int, default=20, help="competition persons of the synthetic DATA (default 20)")
    p.add_argument("--size", type=int, nargs=2, default=[160, 120], metavar=("H", "W"), help="cache size (160 120)")
    p.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep each N's faces and cache under --work")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="maskds-faces-bench-", dir=a.work))
    data = synthetic_data(a.persons, work / "data")
    pools = a.pool or [generated_pool(work / "pool")]
    faces = pool_faces(pools, a.min_age)
    if not faces:
        raise SystemExit(f"no UTKFace-named image aged {a.min_age} or more in {', '.join(map(str, pools))}")
    if not a.json:
        print(f"command: {command()}\nmachine: {machine()}", flush=True)
        print(f"pool: {len(faces)} faces ({', '.join(map(str, a.pool)) if a.pool else 'generated'}); DATA: "
              f"{a.persons} synthetic persons; cache {a.size[0]}x{a.size[1]}, --face-crop fixed; "
              f"--num-proc {a.num_proc}; scratch {work}", flush=True)
    results = [run_size(n, faces, data, work, a) for n in a.sizes]
    if not a.keep:
        shutil.rmtree(work)
    if a.json:
        print(json.dumps({"machine": machine(), "pool_faces": len(faces), "results": results}))
        return 0
    print("| N faces | step | seconds | faces/s | peak RSS, largest process (MB) | main process (MB) | "
          "process tree (MB) | disk (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for step, disk in (("import", r["disk_mb"]["import"]), ("build", r["disk_mb"]["cache"])):
            s = r[step]
            print(f"| {r['imported']:,} | {step} | {s['seconds']} | {s['faces_per_s']} | {s['peak_rss_mb']} | "
                  f"{s.get('main_mb', '-')} | {s.get('tree_mb', '-')} | {disk} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
