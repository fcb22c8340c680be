"""Predict an eval folder with every fold of one or more runs: `python infer.py --run runs/NAME --data DATA/eval --out submission.csv`."""
import sys

from maskds.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
