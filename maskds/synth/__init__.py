"""Synthetic data in the competition's raw layout (demos and tests): floor 1, imports only core."""
