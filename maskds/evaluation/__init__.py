"""Evaluation: metrics (macro F1 over 18 classes, per head) and `maskds score`."""
