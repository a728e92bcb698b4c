"""The training loop, checkpoints and logging: plain PyTorch, no Ray. It drives methods/; the torch helpers
methods use live below both, in ssl_ray/nn/."""
