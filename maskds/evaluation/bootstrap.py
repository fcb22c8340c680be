"""Is B better than A beyond the noise: macro F1 under person-bootstrap weights, seed pairing and the verdict."""
from __future__ import annotations

import numpy as np

from maskds.core.labels import HEAD_NAMES, NUM_CLASSES
from maskds.core.metrics import scores

VERDICTS = ("B is better", "B is worse", "no difference shown")
DRAWS, SEED = 2000, 0  # ../shared/devbench/compare.py's person bootstrap: 2,000 draws of default_rng(0)
CHUNK = 250  # draws whose confusion counts are held at once


def present(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """The classes macro F1 averages over (bool [k]): those in the truth or the prediction (sklearn's rule,
    as `maskds score`; on the devbench every class is in the truth, so all 18, as its compare.py)."""
    return (np.bincount(truth, minlength=k) + np.bincount(pred, minlength=k)) > 0


def macro_f1_counts(cm: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Macro F1 of confusion counts [..., k, k] (rows = truth) over the classes `labels` marks; a class
    with no truth and no prediction under some weights scores 0 there (as the devbench's compare.py)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(-1) + cm.sum(-2)  # support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)
    return f1[..., labels].mean(-1)


def macro_f1(truth: np.ndarray, pred: np.ndarray, k: int = NUM_CLASSES) -> float:
    """Macro F1 of k-class ids over the classes present (equal to sklearn's f1_score(average='macro'))."""
    cm = np.bincount(truth * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    return float(macro_f1_counts(cm, present(truth, pred, k)))


def person_weights(n_persons: int, draws: int, seed: int) -> np.ndarray:
    """[draws, n_persons] bootstrap counts: how often each person is drawn, n_persons draws with
    replacement each time; the stream of the devbench's compare.py, so both give the same interval."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n_persons, n_persons), minlength=n_persons)
                     for _ in range(draws)]).astype(np.float64)


def boot_f1(truth: np.ndarray, pred: np.ndarray, person: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[draws] macro F1 of one prediction under each row of person weights (every image of a drawn person
    counts as often as the person was drawn). Per-person counts times whole-number weights are exact, so
    this equals weighting each image with bincount."""
    k = NUM_CLASSES
    n_persons = weights.shape[1]
    counts = np.bincount(person * k * k + truth * k + pred, minlength=n_persons * k * k)
    counts = counts.reshape(n_persons, k * k).astype(np.float64)
    labels = present(truth, pred, k)
    return np.concatenate([macro_f1_counts((weights[i:i + CHUNK] @ counts).reshape(-1, k, k), labels)
                           for i in range(0, len(weights), CHUNK)])


def seed_difference(fa: list[float], fb: list[float]) -> dict:
    """B - A over seeds: with as many runs a side, the runs are paired in order (same seed) and the SE is
    that of the mean paired difference; otherwise the SE of a difference of means (a side with one run
    takes the other side's sd). `seeds_ok`: the difference is at least twice its SE (always true with one
    run a side, where seeds say nothing)."""
    a, b = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
    paired = len(a) == len(b)
    if paired:
        pairs = b - a
        mean = float(np.mean(pairs))
        se = float(np.std(pairs, ddof=1) / np.sqrt(len(pairs))) if len(pairs) > 1 else float("nan")
        ok = len(pairs) < 2 or abs(mean) >= 2 * se
    else:
        var_a = np.var(a, ddof=1) if len(a) > 1 else np.var(b, ddof=1)
        var_b = np.var(b, ddof=1) if len(b) > 1 else np.var(a, ddof=1)
        mean = float(np.mean(b) - np.mean(a))
        se = float(np.sqrt(var_a / len(a) + var_b / len(b)))
        ok = abs(mean) >= 2 * se
    return {"paired": paired, "pairs": int(min(len(a), len(b))) if paired else 0, "seed_diff": mean,
            "paired_se": se, "seeds_ok": bool(ok)}


def verdict(lo: float, hi: float, seeds_ok: bool) -> str:
    """B is better (worse) when the 95% person interval lies above (below) 0 and the seeds agree."""
    if lo > 0 and seeds_ok:
        return VERDICTS[0]
    if hi < 0 and seeds_ok:
        return VERDICTS[1]
    return VERDICTS[2]


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def compare_predictions(truth: np.ndarray, person: np.ndarray, preds_a: list[np.ndarray],
                        preds_b: list[np.ndarray], draws: int = DRAWS, seed: int = SEED) -> dict:
    """Every statistic of `maskds compare` for class predictions of the same images: truth [N] class ids,
    person [N] codes 0..P-1 (the bootstrap's unit: a person's 7 photos share a face), each side's runs
    (in seed order). Returns scores, means, sds, the difference, its seed SE, the 95% interval over
    resampled persons, the per-head means and the verdict."""
    truth, person = np.asarray(truth, dtype=np.int64), np.asarray(person, dtype=np.int64)
    fa = [macro_f1(truth, p) for p in preds_a]
    fb = [macro_f1(truth, p) for p in preds_b]
    weights = person_weights(int(person.max()) + 1, draws, seed)
    boot_a = np.mean([boot_f1(truth, p, person, weights) for p in preds_a], axis=0)
    boot_b = np.mean([boot_f1(truth, p, person, weights) for p in preds_b], axis=0)
    lo, hi = (float(v) for v in np.percentile(boot_b - boot_a, [2.5, 97.5]))
    seeds = seed_difference(fa, fb)
    runs_a, runs_b = [scores(truth, p) for p in preds_a], [scores(truth, p) for p in preds_b]
    heads = {}
    for h in HEAD_NAMES:
        a, b = (float(np.mean([run[f"{h}_f1"] for run in runs])) for runs in (runs_a, runs_b))
        heads[h] = {"a": a, "b": b, "diff": b - a}
    return {"a_scores": fa, "b_scores": fb, "a_mean": float(np.mean(fa)), "a_sd": _sd(fa),
            "b_mean": float(np.mean(fb)), "b_sd": _sd(fb), "diff": float(np.mean(fb) - np.mean(fa)), **seeds,
            "interval": [lo, hi], "heads": heads, "images": int(len(truth)), "persons": int(person.max()) + 1,
            "draws": int(draws), "seed": int(seed), "verdict": verdict(lo, hi, seeds["seeds_ok"])}
