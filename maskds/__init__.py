"""maskds: face-mask classification pipeline."""
