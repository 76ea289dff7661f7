"""bench: a reproducibility matrix for semi-supervised knowledge distillation."""

__version__ = "0.1.0"
