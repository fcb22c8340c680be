"""`train.py`'s command line: `--config X.yaml key=value ...`, every key listed in `--help`."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from maskds.config.keys import TrainConfig, load_config
from maskds.core.distributed import PeerFailed, ProcessError
from maskds.core.errors import UserError
from maskds.evaluation.oof import fit_decision
from maskds.training.fit import run


def build_parser() -> argparse.ArgumentParser:
    keys = ", ".join(f"{k}={v!r}" for k, v in TrainConfig().to_dict().items())
    parser = argparse.ArgumentParser(
        prog="train.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train maskds folds, each validated on its own person-level fold; run it under accelerate:\n"
        "  accelerate launch -q --config_file accelerate_configs/cpu.yaml train.py --config configs/demo.yaml "
        "cache=demo/cache folds=[0,1]\nPrecision and process count come from the launch config "
        "(accelerate_configs/), everything else from the train config and key=value overrides.",
        epilog="config keys and their defaults (maskds/config/keys.py documents each one):\n"
        + textwrap.fill(keys, 100),
    )
    parser.add_argument("--config", help="YAML train config, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 folds=[0]")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`train.py --config X.yaml key=value ...`: 0 on success, 2 on a user error, 1 when a peer process failed."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        run(config)
        if config.tune_decision != "none" and int(os.environ.get("RANK", "0")) == 0:
            fit_decision(Path(config.output_dir) / config.name, config)  # once, on the main process
    except PeerFailed as err:  # this process is fine; say why it stops (another node's log may be far away)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except UserError as err:
        # Input errors are found by every process alike: one message. A process's own failure: its own.
        if int(os.environ.get("RANK", "0")) == 0 or isinstance(err, ProcessError):
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
