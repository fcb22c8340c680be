"""What `maskds tune` reports to Optuna: each epoch's EMA validation F1 as a trial's folds write it, at a
step that means the same fold and epoch in every trial."""
from __future__ import annotations

import json
from pathlib import Path

from maskds.config.keys import load_config
from maskds.config.plan import run_models
from maskds.tuning.space import Param


def most_epochs(config: str | None, overrides: list[str], space: list[Param]) -> int:
    """The most epochs a trial of a study (base `config` and `overrides`, search `space`) trains: the
    stride of the steps reported to Optuna, so a step is the same fold and epoch in every trial, also
    when the space chooses `epochs`."""
    for p in space:
        if p.key == "epochs":
            return int(p.high) if p.kind == "int" else max(int(v) for v in p.choices)
    return load_config(config, overrides).epochs


def complete_records(path: Path) -> list[dict]:
    """The lines of a metrics file written whole, parsed: up to the first that is not valid JSON (the line
    being written, even one cut off right after a nested dict's brace)."""
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class EpochReader:
    """New epochs of a run as its folds write them: (step, EMA macro F1), step = the fold's place in
    training order x `stride` + epoch, `stride` the most epochs any trial trains (`most_epochs`), so every
    trial reports fold k's epoch e at the same step (what the pruner compares) whatever the fold ids,
    their order and the trial's epochs."""

    def __init__(self, run_dir: Path, stride: int):
        self.run_dir, self.stride = run_dir, stride
        self.seen: dict[Path, int] = {}    # metrics file -> lines reported, in the order folds started

    def new(self) -> list[tuple[int, float]]:
        out = []
        models = run_models(self.run_dir) if self.run_dir.is_dir() else {}
        started = [p for m, d in models.items() if m.validates and (p := d / "metrics.jsonl").is_file()
                   and p not in self.seen]
        for path in sorted(started, key=lambda p: p.stat().st_mtime):  # train.py runs one fold at a time
            self.seen[path] = 0
        for place, (path, done) in enumerate(list(self.seen.items())):
            records = complete_records(path)
            for record in records[done:]:
                ema = record["ema"]  # "score": what picks the epoch (older runs: the 18-class macro F1)
                out.append((place * self.stride + int(record["epoch"]), float(ema.get("score", ema["macro_f1"]))))
            self.seen[path] = len(records)
        return out
