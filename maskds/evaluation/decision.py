"""Decisions tuned for macro F1 on a run's out-of-fold probabilities; `decision.json` in the run folder
holds one and infer.py applies it.

Macro F1 rewards the rare classes, which a plain argmax under-predicts. Two kinds of rule:
- class weights: `fit_class_weights` searches weights w (coordinate ascent over a fixed grid, a few rounds)
  so that argmax(p * w) maximises macro F1, one weight per class (default) or per head value;
- age thresholds (a regression age head): `fit_age_thresholds` picks the two ages where the bands are
  cut (the model's age estimate is pulled toward the mean age, so the young are read as 30-ish);
  infer.py computes each model's band probabilities at those cuts.
Fitted and scored on the same predictions, the out-of-fold gain is optimistic: judge it held out.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maskds.config.plan import OOF_FILE, run_models
from maskds.core.atomic import atomic_path
from maskds.core.errors import UserError
from maskds.core.labels import NUM_CLASSES
from maskds.core.probabilities import AGE_SIGMA, class_probs_from_heads

DECISION_FILE = "decision.json"
GRID = np.exp(np.linspace(np.log(0.4), np.log(2.5), 15))  # weights tried per class, 1.0 among them


def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in truth or prediction (sklearn's rule), computed fast."""
    cm = np.bincount(truth * NUM_CLASSES + pred, minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * tp / np.maximum(support + predicted, 1)
    return float(f1[present].mean())


def class_weights_of(head_weights: np.ndarray) -> np.ndarray:
    """18 class weights from 8 head weights (mask 3 | gender 2 | age 3): w[m*6 + g*3 + a] = wm * wg * wa."""
    wm, wg, wa = head_weights[:3], head_weights[3:5], head_weights[5:]
    return (wm[:, None, None] * wg[None, :, None] * wa[None, None, :]).reshape(NUM_CLASSES)


def fit_class_weights(probs: np.ndarray, truth: np.ndarray, per: str = "class", rounds: int = 3) -> np.ndarray:
    """Class weights (geometric mean 1) maximising macro F1 of argmax(probs * w) on these rows.

    per="class": 18 free weights. per="head": one weight per head value (3 mask, 2 gender, 3 age; class
    weight = their product), 8 numbers that move whole bands. Either fits the rows it is tuned on better
    than new ones: judge it held out (docs/benchmarks.md has the devbench numbers).
    """
    if per not in ("head", "class"):
        raise ValueError(f"per must be 'head' or 'class', got {per!r}")
    truth = np.asarray(truth, dtype=np.int64)
    to_class = class_weights_of if per == "head" else (lambda v: v)
    v = np.ones(8 if per == "head" else NUM_CLASSES)
    best = macro_f1(truth, (probs * to_class(v)).argmax(1))
    for _ in range(rounds):
        improved = False
        for c in range(len(v)):
            for g in GRID:
                trial = v.copy()
                trial[c] = g
                score = macro_f1(truth, (probs * to_class(trial)).argmax(1))
                if score > best + 1e-12:
                    best, v, improved = score, trial, True
        if not improved:
            break
    w = to_class(v)
    return w / np.exp(np.log(w).mean())


def oof_fingerprints(run: str | Path) -> dict[str, str]:
    """{fold folder name: hash of its oof.csv}: what a decision was fitted on (a retrained fold changes it);
    the run's validating models, as the fold plan finds them."""
    files = [d / OOF_FILE for m, d in run_models(Path(run)).items() if m.validates]
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(files) if p.is_file()}


def shift_age_bands(age: np.ndarray, old: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
    """A regression age head's band probabilities at cuts `new`, from those at cuts `old` (exact: the
    bands are a normal of AGE_SIGMA years around the predicted age, so each cut moves its quantile)."""
    p = torch.as_tensor(age, dtype=torch.float64)
    below = torch.special.ndtr(torch.special.ndtri(p[:, 0]) + (new[0] - old[0]) / AGE_SIGMA)
    above = torch.special.ndtr(torch.special.ndtri(p[:, 2]) - (new[1] - old[1]) / AGE_SIGMA)
    return torch.stack([below, (1 - below - above).clamp_min(0), above], 1).numpy()


def age_cut_classes(probs: dict[str, np.ndarray], old: tuple[int, int], cuts: tuple[int, int]) -> np.ndarray:
    """The 18-class answers (argmax of mask x gender x age bands) with a regression age head's bands read
    at `cuts` instead of `old`."""
    mask, gender = (torch.as_tensor(probs[k], dtype=torch.float64) for k in ("mask", "gender"))
    age = torch.as_tensor(shift_age_bands(probs["age"], old, cuts))
    return class_probs_from_heads(mask, gender, age).argmax(1).numpy()


def fit_age_thresholds(probs: dict[str, np.ndarray], truth: np.ndarray, old: tuple[int, int],
                       reach: tuple[int, int] = (5, 8)) -> tuple[int, int]:
    """The band cuts (whole years, each within `reach` of `old`) whose class probabilities
    (mask x gender x the shifted age bands) give the best macro F1 on these rows; ties: the smallest move."""
    truth = np.asarray(truth, dtype=np.int64)
    moves = sorted((d for d in itertools.product(range(-reach[0], reach[0] + 1), range(-reach[1], reach[1] + 1))
                    if 0 < old[0] + d[0] < old[1] + d[1]), key=lambda d: (abs(d[0]) + abs(d[1]), d))
    best, best_cuts = -1.0, old
    for d_low, d_high in moves:
        cuts = (old[0] + d_low, old[1] + d_high)
        score = macro_f1(truth, age_cut_classes(probs, old, cuts))
        if score > best + 1e-12:
            best, best_cuts = score, cuts
    return best_cuts


@dataclass(frozen=True)
class Decision:
    """A tuned decision: class weights on the 18-class probabilities, or the age bands' cuts."""

    kind: str                                     # class_weights | age_thresholds
    weights: np.ndarray | None = field(default=None, compare=False)  # [18] (class_weights)
    age_thresholds: tuple[int, int] | None = None  # (age_thresholds)

    def describe(self) -> str:
        if self.kind == "age_thresholds":
            return f"age bands cut at {self.age_thresholds[0]} and {self.age_thresholds[1]}"
        return "class weights"


def save_decision(run: str | Path, rule: np.ndarray | tuple[int, int], heads: dict, before: dict, after: dict,
                  per: str = "class") -> Path:
    """Write RUN/decision.json: the rule (18 class weights, or two age cuts), the heads and out-of-fold files
    it was fitted on, the scores."""
    path = Path(run) / DECISION_FILE
    if len(rule) == 2:
        kind = {"kind": "age_thresholds", "age_thresholds": [int(v) for v in rule]}
    else:
        kind = {"kind": "class_weights", "per": per, "weights": [float(v) for v in rule]}
    doc = {**kind, "heads": heads, "fitted_on": oof_fingerprints(run),
           "oof_before": before, "oof_after": after,
           "note": "fitted on the run's out-of-fold probabilities; oof_after is optimistic"}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _rule(doc: dict, path: Path) -> Decision:
    """The rule of a parsed decision file, checked."""
    if doc.get("kind") == "age_thresholds":
        cuts = doc["age_thresholds"]
        if (not isinstance(cuts, list) or len(cuts) != 2 or not all(isinstance(v, int) for v in cuts)
                or not 0 < cuts[0] < cuts[1]):
            raise UserError(f"decision file {path}: age_thresholds must be two whole ages, low < high, got {cuts!r}")
        if doc["heads"].get("age_head") != "regression":
            raise UserError(f"decision file {path}: age thresholds apply to a regression age head, not "
                            f"{doc['heads'].get('age_head')!r}")
        return Decision("age_thresholds", age_thresholds=(cuts[0], cuts[1]))
    weights = np.asarray(doc["weights"], dtype=np.float64)
    if doc.get("kind") != "class_weights" or weights.shape != (NUM_CLASSES,) or not (weights > 0).all():
        raise UserError(f"decision file {path} must hold {NUM_CLASSES} positive class weights")
    return Decision("class_weights", weights=weights)


def load_decision(path: str | Path, heads: dict | None = None, run: str | Path | None = None) -> Decision:
    """The rule of a decision file, checked: `heads` ({head, age_head}) must match if given, and the
    out-of-fold files of `run` must be those it was fitted on (no fold added or retrained since)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        fitted_for = doc["heads"]
        rule = _rule(doc, path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"decision file {path} is not a maskds decision ({err}); refit it with "
                        "`maskds oof RUN --tune-decision [class|head|age]` or pass --no-tuned-decision") from None
    refit = f"`maskds oof RUN --tune-decision{' age' if rule.kind == 'age_thresholds' else ''}`"
    if heads is not None and fitted_for != heads:
        raise UserError(f"decision file {path} was fitted for heads {fitted_for}, but the run's checkpoints "
                        f"hold {heads}; refit it ({refit}) or pass --no-tuned-decision")
    if run is not None and doc.get("fitted_on") != oof_fingerprints(run):
        raise UserError(f"decision file {path} was fitted on other out-of-fold predictions than {run} holds now "
                        f"(a fold was added or retrained); refit it ({refit}) or pass --no-tuned-decision")
    return rule
