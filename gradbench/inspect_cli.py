"""`gradbench inspect` (placeholder until the probes land)."""

from gradbench.errors import UsageError


def inspect_command() -> None:
    """Show one run's gradient-flow evidence."""
    raise UsageError("`gradbench inspect` is not available yet")
