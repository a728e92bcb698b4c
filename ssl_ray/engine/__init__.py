"""The training loop, evaluation, checkpoints and logging: plain PyTorch, no Ray."""
