"""Training curves of a fold, drawn from its metrics.jsonl: losses and macro F1 by epoch, raw vs EMA."""
from __future__ import annotations

import json
from pathlib import Path

from maskds.core.atomic import atomic_path


def plot_curves(metrics_file: str | Path, out: str | Path) -> Path:
    """Write a PNG with train/validation loss and 18-class macro F1 (raw and EMA weights) per epoch."""
    import matplotlib  # lazy: only the main process draws, and pyplot is slow to import

    matplotlib.use("Agg")  # no display on training machines; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] + 1 for r in rows]
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    for which, style in (("raw", "s--"), ("ema", "o-")):
        scored = [(e, r[which]) for e, r in zip(epochs, rows) if r.get(which)]  # raw: only with validate_raw
        if scored:
            loss_ax.plot([e for e, _ in scored], [s["loss"] for _, s in scored], style, label=f"val {which}")
            f1_ax.plot([e for e, _ in scored], [s["macro_f1"] for _, s in scored], style,
                       label=f"{which} macro F1 (18)")
    aged = [(e, r["ema"]["age_f1"]) for e, r in zip(epochs, rows) if r.get("ema")]  # folds=full: no validation
    if aged:
        f1_ax.plot([e for e, _ in aged], [f for _, f in aged], ":", label="EMA age F1")
    best = [r for r in rows if r.get("best")]
    if best:
        f1_ax.axvline(best[-1]["epoch"] + 1, color="grey", lw=0.8, label="best (saved)")
    loss_ax.set(title="loss", xlabel="epoch")
    f1_ax.set(title="validation F1", xlabel="epoch", ylim=(0, 1.02))
    for ax in (loss_ax, f1_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:  # folds=full: nothing validated, no F1 to label
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return Path(out)
