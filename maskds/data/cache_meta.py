"""A cache's record (`maskds_cache.json`): its identity, its build arguments, whether a build can reuse it,
and the command that rebuilds it."""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from rich.console import Console

from maskds.core.errors import UserError
from maskds.core.faces import FIXED_BOX_RULE
from maskds.data.layout import Layout

FORMAT_VERSION = 1
META_NAME = "maskds_cache.json"
console = Console(stderr=True)


def cache_id(meta: dict) -> str:
    """A short identity of a cache's content: its inputs, build arguments and corrections."""
    key = json.dumps([meta.get("inputs_fingerprint"), meta.get("args"), meta.get("corrections", {}).get("sha256")],
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def inputs_fingerprint(data: Path, layout: Layout, corrections_sha: str | None) -> str:
    """Cheap fingerprint of the inputs: relpath, size and mtime of every file used, plus the corrections."""
    h = hashlib.sha256(f"corrections {corrections_sha}\n".encode())
    rels = layout.files + [r.path for r in layout.train] + [e.path for e in layout.eval or []]
    for rel in sorted(rels):
        st = (data / rel).stat()
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def rebuild_command(data: str | Path, cache: str | Path, args: dict, force: bool = True) -> str:
    """The `maskds build` command (with `--force` unless told not to) that builds `cache` with the build
    arguments `args` (a cache's `meta["args"]`; `face_crop` [method, margin] or None), quoted for a shell."""
    cmd = ["maskds", "build", str(data), str(cache), "--size", *map(str, args.get("size", ["H", "W"])),
           "--folds", str(args.get("folds", 5)), "--seed", str(args.get("seed", 42))]
    if args.get("face_crop"):
        cmd += ["--face-crop", str(args["face_crop"][0]), "--face-margin", f"{float(args['face_crop'][1]):g}"]
    if args.get("corrections", "default") != "default":
        cmd += ["--corrections", str(args["corrections"])]
    for folder in args.get("extra", []):
        cmd += ["--extra", str(folder)]
    return shlex.join(cmd + (["--force"] if force else []))


def stale_face_box(args: dict) -> str | None:
    """What is wrong with a face-cropped cache whose fixed boxes were placed by another rule than this
    maskds's (`core.faces.FIXED_BOX_RULE`; none recorded: rule 1), or None."""
    if not args.get("face_crop") or args.get("face_box_rule") == FIXED_BOX_RULE:
        return None
    return (f"its fixed face boxes, the `fixed` crop's and `mtcnn`'s fallback, were placed by rule "
            f"{args.get('face_box_rule', 1)}; this maskds and inference place them by rule {FIXED_BOX_RULE}, so the "
            "cached crops of photos that are not 3:4 differ from what inference cuts")


def _differences(meta: dict, args: dict, fingerprint: str) -> list[str]:
    """What differs between an existing cache's record and this build."""
    diffs = []
    if meta.get("format_version") != FORMAT_VERSION:
        diffs.append(f"format version: cache has {meta.get('format_version')}, this maskds writes {FORMAT_VERSION}")
    old = meta.get("args", {})
    for key in dict.fromkeys([*args, *old]):  # a key only one side has differs too (e.g. face_crop, pseudo)
        if old.get(key) != args.get(key):
            why = stale_face_box(old) if key == "face_box_rule" else None
            diffs.append(f"{key}: cache has {old.get(key)!r}, this build asks for {args.get(key)!r}"
                         + (f": {why}" if why else ""))
    if meta.get("inputs_fingerprint") != fingerprint:
        diffs.append("inputs: files under DATA or the --extra folders (added, removed or modified) or the "
                     "corrections file changed since the cache was built")
    return diffs


def reuse(cache: Path, args: dict, fingerprint: str, force: bool, data: Path) -> bool:
    """True if CACHE already holds this build; UserError if it holds another one and not --force."""
    if not cache.exists() or (cache.is_dir() and not any(cache.iterdir())):
        return False
    meta_path = cache / META_NAME
    if not meta_path.is_file():
        raise UserError(f"{cache}: exists and is not a maskds cache (no {META_NAME}); choose another CACHE "
                        f"path or remove it yourself (maskds will not delete it)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    diffs = _differences(meta, args, fingerprint)
    if not diffs and not force:
        console.print(f"[green]reusing[/] the cache at {cache}: same inputs and arguments "
                      f"(pass --force to rebuild it)")
        return True
    if diffs and not force:
        raise UserError(f"{cache}: a cache built from other inputs or arguments is already there; pass "
                        f"--force to rebuild it (`{rebuild_command(data.resolve(), cache, args)}`), or choose "
                        "another CACHE:", diffs)
    console.print(f"--force: rebuilding {cache}" + (f" ({'; '.join(diffs)})" if diffs else ""))
    return False


def cache_crop(meta: dict) -> tuple[str, float] | None:
    """The face crop (method, margin) a cache was built with, or None."""
    crop = meta.get("args", {}).get("face_crop")
    return None if crop is None else (str(crop[0]), float(crop[1]))
