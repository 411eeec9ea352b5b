"""Training: the config schema and peers' aliases, the recipe, the Trainer, the loss, batching, checkpoints."""
