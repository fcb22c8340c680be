"""Data stage: raw layout, corrections, folds, the arrow cache, synthetic data, EDA."""
