"""What training shows while it runs: a progress bar with loss, lr and images/s, and an end-of-epoch table."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Union

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from maskds.config.plan import FoldModel
from maskds.core.console import console

SCORE_KEYS = (("loss", "loss"), ("macro_f1", "F1 (18)"), ("mask_f1", "mask F1"),
              ("gender_f1", "gender F1"), ("age_f1", "age F1"), ("accuracy", "accuracy"))


@contextmanager
def train_progress(enabled: bool, description: str, total: int,
                   images_per_batch: int) -> Iterator[Optional[Callable[[int, float, float], None]]]:
    """Yield an `on_progress(batches_done, loss, lr)` callback driving a rich bar, or None if disabled."""
    if not enabled:
        yield None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s"),
               TimeElapsedColumn()]
    start = time.perf_counter()
    # No refresh thread (it takes the GIL ten times a second from the loop feeding the GPU): the bar
    # redraws when the loop reports, every `log_every` batches.
    with Progress(*columns, console=console, auto_refresh=False) as bar:
        task = bar.add_task(description, total=total, loss="-", lr="-", ips="-")

        def on_progress(done: int, loss: float, lr: float) -> None:
            ips = done * images_per_batch / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, loss=f"{loss:.4f}", lr=f"{lr:.2e}", ips=f"{ips:.0f}", refresh=True)

        yield on_progress
        bar.update(task, completed=total, refresh=True)


def epoch_table(fold: FoldModel | int, epochs: int, record: dict) -> Union[Table, Text]:
    """Validation scores of the raw and EMA weights side by side (EMA picks the best checkpoint); with
    folds=full (nothing validated) the epoch's line alone, not an empty table.

    `record` is a metrics.jsonl line (`records.epoch_record`).
    """
    title = (f"{FoldModel.of(fold).label}  epoch {record['epoch'] + 1}/{epochs}  train loss {record['train_loss']:.4f}  "
             f"{record['images_per_s']:.0f} img/s")
    if record["ema"] is None:  # folds=full: nothing validated (validate_raw is refused), the last epoch's EMA kept
        return Text.from_markup(title + "  (no validation: folds=full)"
                                + ("  [green]saved (last epoch)[/]" if record["best"] else ""))
    if record["best"]:
        title += "  [green]new best (EMA F1)[/]"
    table = Table(title=title, title_justify="left")
    table.add_column("weights")
    for _, label in SCORE_KEYS:
        table.add_column(label, justify="right")
    table.add_column("n", justify="right")
    for name, scores in (("raw", record["raw"]), ("EMA", record["ema"])):
        if scores is None:  # raw weights are scored only with validate_raw
            continue
        table.add_row(name, *(f"{scores[k]:.4f}" for k, _ in SCORE_KEYS), str(scores["n"]))
    return table
