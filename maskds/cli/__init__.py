"""The command line: `maskds ...` (main), train.py's (train) and infer.py's (infer) arguments."""
from maskds.cli.main import main

__all__ = ["main"]
