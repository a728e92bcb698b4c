"""Torch helpers the methods (and the loop) share, below both: data-parallel averaging (`distributed`),
evaluation metrics (`metrics`), pictures (`plots`), train/eval and frozen-parameter contexts (`modes`), and
pure functions of logits (`functional`). Nothing here imports methods/ or engine/."""
