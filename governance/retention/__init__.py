"""Retention: the sweep that deletes (or aggregates) what is past its storage deadline, and its schedule.

``from governance.retention import sweep, status, run_periodically`` — the names are loaded on first use, so
that importing the table module (``governance.retention.tables``, which the store's engine module registers)
pulls in nothing else.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = frozenset({"SweepReport", "aggregate_rules", "expired", "run_periodically", "status", "sweep"})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from governance.retention import sweeper

        return getattr(sweeper, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
