"""Train maskds folds: `accelerate launch train.py --config configs/demo.yaml key=value ...`."""
import sys

from maskds.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
