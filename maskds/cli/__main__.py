"""`python -m maskds.cli ...`: the `maskds` command without its console script."""
import sys

from maskds.cli.main import main

sys.exit(main())
