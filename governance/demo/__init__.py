"""The generated city day: every feed of the three modules, deterministic from a seed and a date.

``write_demo`` writes the capture files, the CSV export and the adapter configurations;
``ingest_demo`` runs them through the real pipeline. ``citygov demo`` does both.
"""

from __future__ import annotations

from governance.demo.city import CityDay, CityPlan, build_plan, simulate_day, sun_times
from governance.demo.files import FEED_NAMES, FeedFile, make_feed, write_feed
from governance.demo.run import (
    DEFAULT_DATE,
    DEFAULT_SEED,
    DemoFiles,
    DemoResult,
    demo_directory,
    ingest_demo,
    record_consents,
    write_demo,
)

__all__ = [
    "DEFAULT_DATE",
    "DEFAULT_SEED",
    "FEED_NAMES",
    "CityDay",
    "CityPlan",
    "DemoFiles",
    "DemoResult",
    "FeedFile",
    "build_plan",
    "demo_directory",
    "ingest_demo",
    "make_feed",
    "record_consents",
    "simulate_day",
    "sun_times",
    "write_demo",
    "write_feed",
]
