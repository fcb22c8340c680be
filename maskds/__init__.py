"""maskds: face-mask classification pipeline."""
import os

# albumentations asks PyPI for a newer version on import (a 2 s timeout and a warning in every process
# on an offline machine, such as a competition's inference job). The user's own setting wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
