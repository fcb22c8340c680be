"""Inference stage: models rebuilt from checkpoints, TTA, sharded prediction, soft voting, infer.py's CLI."""
