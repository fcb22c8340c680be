"""More training data after a first model: external faces imported (masks drawn), pseudo-labels."""
