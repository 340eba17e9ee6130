"""`gradbench budget` (placeholder until matched budgets land)."""

from gradbench.errors import UsageError


def budget_command() -> None:
    """Solve widths for a matched budget and print them, without training."""
    raise UsageError("`gradbench budget` is not available yet")
