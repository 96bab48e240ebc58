"""``citygov demo``: a generated city day through every adapter."""

from __future__ import annotations


def demo_command() -> None:
    """Generate a realistic city day for all three modules and ingest it through every adapter."""
    raise NotImplementedError
