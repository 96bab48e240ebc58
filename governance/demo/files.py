"""Writing generated feeds to disk: capture files, CSV exports, adapter configurations, a manifest."""

from __future__ import annotations

import codecs
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from governance.demo.care import CareHubFeed
from governance.demo.city import CityPlan
from governance.demo.feeds import Capture, CsvRow, Feed
from governance.demo.lighting import StreetlightFeed, TrafficCounterFeed
from governance.demo.monitoring import DepartmentCsvFeed, TtnFeed, UltraLightFeed

#: Every generated feed, in the order the demo ingests them (lighting, monitoring, care).
FEEDS: tuple[type[Feed], ...] = (
    StreetlightFeed, TrafficCounterFeed, UltraLightFeed, TtnFeed, DepartmentCsvFeed, CareHubFeed,
)
FEED_NAMES: tuple[str, ...] = tuple(f.adapter for f in FEEDS)


def make_feed(adapter: str, plan: CityPlan, *, max_payload_bytes: int = 256 * 1024) -> Feed:
    for cls in FEEDS:
        if cls.adapter == adapter:
            return cls(plan, max_payload_bytes=max_payload_bytes)
    raise KeyError(f"no demo feed for adapter {adapter!r} (known: {', '.join(FEED_NAMES)})")


@dataclass
class FeedFile:
    """A written feed: where its input and configuration are, how many records, which defects."""

    adapter: str
    input: Path
    config: Path | None
    records: int = 0
    defects: list[dict[str, Any]] = field(default_factory=list)
    """``{"record": n, "line": n, "defect": name, "reason": reason or None}``, one per defective record."""

    def expected_reasons(self) -> Counter[str]:
        return Counter(d["reason"] for d in self.defects if d["reason"] is not None)

    def expected_duplicates(self) -> int:
        return sum(1 for d in self.defects if d["reason"] is None)

    def as_dict(self) -> dict[str, Any]:
        return {"input": str(self.input), "config": str(self.config) if self.config else None,
                "records": self.records, "defects": len(self.defects)}


def write_config(feed: Feed, directory: Path) -> Path | None:
    config = feed.config()
    if config is None or feed.config_name is None:
        return None
    path = directory / feed.config_name
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def write_feed(
    feed: Feed,
    days: Iterable[date],
    directory: Path,
    *,
    defect_rate: float = 0.015,
    limit: int | None = None,
    input_name: str | None = None,
) -> FeedFile:
    """Write ``feed``'s configuration and input for ``days`` (at most ``limit`` records), streaming."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(feed, directory)
    path = directory / (input_name or feed.input_name)
    written = FeedFile(feed.adapter, path, config)
    line = 1
    with path.open("wb") as out:
        if feed.csv:
            out.write(codecs.BOM_UTF8 + feed.header.encode("utf-8") + b"\r\n")
            line = 2
        for item, defect in feed.generate(days, defect_rate=defect_rate):
            if limit is not None and written.records >= limit:
                break
            if isinstance(item, CsvRow):
                data = item.encode() + b"\r\n"
            else:
                assert isinstance(item, Capture)
                data = item.encode() + b"\n"
            out.write(data)
            written.records += 1
            if defect is not None:
                written.defects.append(
                    {"record": written.records, "line": line, "defect": defect.defect, "reason": defect.reason}
                )
            line += data.count(b"\n")
    return written
