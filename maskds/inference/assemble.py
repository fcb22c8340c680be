"""`infer.py --head`: the answer assembled from heads taken from different runs (per-head specialists).

    infer.py --head mask,gender=runs/base --head age=runs/age_b3 --data DATA/eval --out sub.csv

Each source (a run folder, soft-voted over its folds and TTA views as usual, or a probabilities CSV
written by infer.py) gives the heads named before its `=`; every head (mask, gender, age) must be
given exactly once, and a run folder must have learned the heads it is asked for (`heads` in its
config: a specialist trained with `heads: [age]` gives only the age). The 18-class probabilities are
the product of the assembled heads, as within one multi-head run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from maskds.core.errors import UserError
from maskds.core.labels import HEAD_NAMES
from maskds.core.probabilities import Probs, class_probs_from_heads


@dataclass(frozen=True)
class HeadSource:
    """One source of `--head`: the heads it gives (in HEAD_NAMES order) and the run folder or CSV."""
    heads: tuple[str, ...]
    source: Path


def parse_heads(items: Sequence[str]) -> list[HeadSource]:
    """`HEADS=SOURCE` items, checked: known heads, each covered once; a source named twice is merged
    (it is predicted once)."""
    given: dict[str, Path] = {}
    by_source: dict[Path, list[str]] = {}
    for item in items:
        names, sep, source = item.partition("=")
        if not sep or not names.strip() or not source.strip():
            raise UserError(f"--head {item!r}: write HEADS=RUN, e.g. --head age=runs/age_b3 or "
                            "--head mask,gender=runs/base")
        for head in (n.strip() for n in names.split(",")):
            if head not in HEAD_NAMES:
                raise UserError(f"--head {item!r}: unknown head {head!r}; the heads are {', '.join(HEAD_NAMES)}")
            if head in given:
                raise UserError(f"--head: the {head} head is given twice ({given[head]} and {source}); "
                                "give each head once")
            given[head] = Path(source)
            by_source.setdefault(Path(source), []).append(head)
    missing = [h for h in HEAD_NAMES if h not in given]
    if missing:
        raise UserError(f"--head: no source gives the {', '.join(missing)} head(s); add --head "
                        f"{','.join(missing)}=RUN (each of {', '.join(HEAD_NAMES)} exactly once)")
    return [HeadSource(tuple(h for h in HEAD_NAMES if h in heads), source) for source, heads in by_source.items()]


def check_learned(members: Sequence, wanted: Sequence[tuple[str, ...]], sources: Sequence[Path]) -> None:
    """Every fold checkpoint of run i learned the heads wanted from it (`members`: inference Members)."""
    for m in members:
        lacking = [h for h in wanted[m.run] if h not in m.heads]
        if lacking:
            learned = ",".join(m.heads)
            raise UserError(
                f"{m.path}: this run learned only the {learned} head(s) (config heads: {list(m.heads)}), so it "
                f"cannot give {', '.join(lacking)}; use it as --head {learned}={sources[m.run]} with other runs "
                "for the other heads")


def assemble(runs: Sequence[Probs], sources: Sequence[HeadSource]) -> Probs:
    """Each head from its source, the 18-class probabilities their product."""
    out = {h: runs[i][h] for i, s in enumerate(sources) for h in s.heads}
    heads = [torch.from_numpy(out[h]).double() for h in HEAD_NAMES]
    return {**out, "class": class_probs_from_heads(*heads).numpy()}
