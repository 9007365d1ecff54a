"""The training engine: epoch loop, AMP, optimizers, evaluation, counterfactuals, governor, checkpoints."""
