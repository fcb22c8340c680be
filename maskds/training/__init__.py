"""Training stage: config, transforms, datasets, model, losses, engine, checkpoints, the fold loop."""
