"""The demo end to end: write a generated city day to disk, then ingest it through every adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson

from adapters.base import adapter_class
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.demo.city import ZONE, CityPlan, build_plan
from governance.demo.files import FEED_NAMES, FeedFile, make_feed, write_feed
from governance.ingest.batch import IngestReport
from governance.ingest.pipeline import Pipeline

DEFAULT_SEED = 1120
DEFAULT_DATE = date(2026, 11, 20)
#: Records per pipeline batch in the demo: small enough for a lively progress bar.
DEMO_BATCH_SIZE = 1000
#: What the residents consent to (the collection policy requires it for their observations).
CARE_PURPOSES = ("care.monitoring", "care.alerting")


@dataclass
class DemoFiles:
    directory: Path
    seed: int
    day: date
    scale: float
    feeds: dict[str, FeedFile]
    manifest: Path
    plan: CityPlan

    @property
    def received_at(self) -> datetime:
        """When the files count as received: the next morning (the department exports overnight)."""
        return datetime.combine(self.day + timedelta(days=1), time(6), tzinfo=ZONE)


def demo_directory(settings: Settings, day: date) -> Path:
    return settings.data_dir / "demo" / day.isoformat()


def write_demo(
    directory: Path, *, seed: int = DEFAULT_SEED, day: date = DEFAULT_DATE, scale: float = 1.0,
    max_payload_bytes: int = 256 * 1024,
) -> DemoFiles:
    """Generate the city day for ``seed`` and write every feed, its configuration and a manifest.

    The same arguments always write the same bytes, so ingesting them again finds only duplicates.
    """
    plan = build_plan(seed, scale)
    feeds: dict[str, FeedFile] = {}
    for name in FEED_NAMES:
        feed = make_feed(name, plan, max_payload_bytes=max_payload_bytes)
        feeds[name] = write_feed(feed, [day], directory / name)
    manifest = directory / "defects.json"
    document = {
        "seed": seed, "date": day.isoformat(), "scale": scale,
        "feeds": {name: {"records": f.records, "defects": f.defects} for name, f in feeds.items()},
    }
    manifest.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return DemoFiles(directory, seed, day, scale, feeds, manifest, plan)


def record_consents(registry: ConsentRegistry, plan: CityPlan) -> int:
    """Record every demo resident's explicit consent to wellbeing monitoring, unless already recorded.

    Returns how many consents were recorded now (0 when this database already has them all).
    """
    recorded = 0
    for resident in plan.residents:
        subject = f"urn:ngsi-ld:Person:{resident.id}"
        if registry.find(subject_id=subject, status="active", purpose=CARE_PURPOSES[0], limit=1):
            continue
        registry.grant(
            {
                "subject_id": subject,
                "controller": "City social care services",
                "on_behalf": True,
                "purposes": list(CARE_PURPOSES),
                "legal_basis": "explicit-consent",
                "special_categories": ["health"],
                "collection_method": "signed form at the installation visit of the home hub",
            },
            actor="demo:care-agency",
        )
        recorded += 1
    return recorded


@dataclass
class DemoResult:
    files: DemoFiles
    reports: dict[str, IngestReport]

    @property
    def totals(self) -> IngestReport:
        total = IngestReport()
        for report in self.reports.values():
            total.add(report)
        return total

    @property
    def rerun(self) -> bool:
        """Everything read was already in the store: this database had seen this day before."""
        totals = self.totals
        return totals.read > 0 and totals.duplicates == totals.read

    def as_dict(self) -> dict[str, Any]:
        totals = self.totals.as_dict()
        totals.pop("by_type")
        return {
            "seed": self.files.seed,
            "date": self.files.day.isoformat(),
            "scale": self.files.scale,
            "directory": str(self.files.directory),
            "rerun": self.rerun,
            "adapters": {name: report.as_dict() for name, report in self.reports.items()},
            "totals": totals,
            "files": {"manifest": str(self.files.manifest),
                      **{name: f.as_dict() for name, f in self.files.feeds.items()}},
        }


def ingest_demo(
    files: DemoFiles,
    pipeline: Pipeline,
    *,
    on_start: Callable[[str, int], None] | None = None,
    on_batch: Callable[[str, IngestReport], None] | None = None,
) -> DemoResult:
    """Ingest every written feed through its adapter with ``pipeline``."""
    reports: dict[str, IngestReport] = {}
    batch_size = min(pipeline.settings.batch_size, DEMO_BATCH_SIZE)
    for name, written in files.feeds.items():
        adapter = adapter_class(name).from_config_file(written.config)
        if on_start is not None:
            on_start(name, written.records)
        messages = adapter.read(written.input, received_at=files.received_at,
                                max_bytes=pipeline.settings.max_payload_bytes)

        def batch_done(report: IngestReport, name: str = name) -> None:
            if on_batch is not None:
                on_batch(name, report)

        reports[name] = pipeline.ingest(adapter, messages, batch_size=batch_size, on_batch=batch_done)
    return DemoResult(files, reports)
