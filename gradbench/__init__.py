"""gradbench: measure vanishing and exploding gradients on real tasks, at matched budgets."""

__version__ = "0.1.0"
