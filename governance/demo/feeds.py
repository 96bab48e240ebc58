"""What every generated feed shares: the items it emits, its defects, and how defects are injected.

A feed emits, for one simulated day, a list of clean items — captured MQTT messages (``Capture``) or
CSV rows (``CsvRow``) — then a small share of them is replaced by realistic defects, each of which
declares the quarantine reason the pipeline must give it (or that it is an exact re-delivery, which
the pipeline counts as a duplicate).
"""

from __future__ import annotations

import base64
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import orjson

from governance.demo.city import CityDay, CityPlan, simulate_day


@dataclass(frozen=True, slots=True)
class Capture:
    """One captured MQTT message: a line ``{"topic", "payload" | "payload_b64", "received_at"}``."""

    topic: str | None
    payload: Any
    """A JSON value (stored as JSON), text, or ``bytes`` (written as ``payload_b64``)."""
    received_at: datetime
    line: bytes | None = None
    """A broken capture line, written exactly as is instead of the envelope."""

    def encode(self) -> bytes:
        if self.line is not None:
            return self.line
        envelope: dict[str, Any] = {}
        if self.topic is not None:
            envelope["topic"] = self.topic
        if isinstance(self.payload, bytes):
            envelope["payload_b64"] = base64.b64encode(self.payload).decode("ascii")
        else:
            envelope["payload"] = self.payload
        envelope["received_at"] = iso_ms(self.received_at)
        return orjson.dumps(envelope)


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One row of a department export: cells to write, or raw bytes written as they are."""

    cells: tuple[str, ...] = ()
    quoted: frozenset[int] = frozenset()
    """Cells quoted even though they need not be (some exports quote numbers)."""
    raw: bytes | None = None

    def encode(self, separator: str = ";") -> bytes:
        if self.raw is not None:
            return self.raw
        out = []
        for index, cell in enumerate(self.cells):
            if index in self.quoted or any(ch in cell for ch in (separator, '"', "\n", "\r")):
                out.append('"' + cell.replace('"', '""') + '"')
            else:
                out.append(cell)
        return separator.join(out).encode("utf-8")


Item = Capture | CsvRow


@dataclass(frozen=True, slots=True)
class Defect:
    """A kind of defect: what it does to an item and what the pipeline must answer.

    ``apply`` returns the items that replace the chosen one, or ``None`` when this kind of defect does
    not fit that item (another item is tried). ``reason`` is the expected quarantine reason; ``None``
    marks an exact re-delivery, which the pipeline counts as a duplicate.
    """

    name: str
    reason: str | None
    apply: Callable[[Item, random.Random], list[Item] | None]
    limit: int | None = None
    """At most this many per day (``None``: any number)."""


@dataclass(frozen=True, slots=True)
class Injected:
    """A defect as placed in the output, for the manifest."""

    defect: str
    reason: str | None


def iso_ms(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and a ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def redelivered(item: Item, _rng: random.Random) -> list[Item] | None:
    """The same message twice, the copy a little later (a broker re-delivery after a reconnect)."""
    if isinstance(item, Capture):
        return [item, replace(item, received_at=item.received_at + timedelta(seconds=37))]
    return [item, item]


def truncated_line(item: Item, rng: random.Random) -> list[Item] | None:
    """The capture line cut short (a collector that died while writing)."""
    if not isinstance(item, Capture) or item.line is not None:
        return None
    line = item.encode()
    cut = rng.randint(len(line) // 3, len(line) * 2 // 3)
    while cut > 0 and line[cut] & 0xC0 == 0x80:  # never inside a UTF-8 sequence: broken JSON, valid text
        cut -= 1
    return [replace(item, line=line[:cut])]


def truncated_payload(item: Item, rng: random.Random) -> list[Item] | None:
    """A JSON payload cut short on the wire (arrives as text that is not JSON)."""
    if not isinstance(item, Capture) or not isinstance(item.payload, dict):
        return None
    text = orjson.dumps(item.payload).decode("utf-8")
    return [replace(item, payload=text[: rng.randint(len(text) // 3, len(text) * 2 // 3)])]


def oversized(max_payload_bytes: int) -> Callable[[Item, random.Random], list[Item] | None]:
    """A message carrying a diagnostic dump far over the payload limit."""

    def apply(item: Item, rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not isinstance(item.payload, dict):
            return None
        blob = "".join(rng.choice("0123456789abcdef") for _ in range(64)) * ((max_payload_bytes + 16_384) // 64)
        return [replace(item, payload={**item.payload, "diagnostics": blob})]

    return apply


class Feed(ABC):
    """One adapter's generated input: its configuration, its clean day, its defects."""

    adapter: ClassVar[str]
    input_name: ClassVar[str]
    config_name: ClassVar[str | None] = None
    csv: ClassVar[bool] = False
    header: ClassVar[str] = ""

    def __init__(self, plan: CityPlan, *, max_payload_bytes: int = 256 * 1024) -> None:
        self.plan = plan
        self.max_payload_bytes = max_payload_bytes

    def config(self) -> dict[str, Any] | None:
        """The adapter configuration (JSON), or ``None`` when the adapter needs none."""
        return None

    @abstractmethod
    def day(self, city: CityDay, rng: random.Random) -> list[Item]:
        """The clean items of one day, in the order they arrived."""

    @abstractmethod
    def defects(self) -> Sequence[Defect]:
        """The kinds of defects this feed suffers."""

    def generate(
        self, days: Iterable[date], *, defect_rate: float = 0.015
    ) -> Iterator[tuple[Item, Injected | None]]:
        """Items day after day (memory holds one day), each with the defect it carries, if any."""
        for day in days:
            city = simulate_day(self.plan, day)
            rng = random.Random(f"{self.plan.seed}:{day.isoformat()}:{self.adapter}")
            items = self.day(city, rng)
            if defect_rate > 0:
                defect_rng = random.Random(f"{self.plan.seed}:{day.isoformat()}:{self.adapter}:defects")
                yield from inject(items, self.defects(), defect_rng, defect_rate)
            else:
                yield from ((item, None) for item in items)


def inject(
    items: list[Item], kinds: Sequence[Defect], rng: random.Random, rate: float
) -> list[tuple[Item, Injected | None]]:
    """Replace about ``rate`` of ``items`` with defects; every kind appears at least once if it can."""
    if not items or not kinds:
        return [(item, None) for item in items]
    budget = min(len(items) // 2, max(len(kinds), round(rate * len(items))))
    wanted: list[Defect] = list(kinds)
    open_ended = [k for k in kinds if k.limit is None] or list(kinds)
    used = {k.name: 1 for k in kinds}
    while len(wanted) < budget:
        kind = rng.choice(open_ended)
        if kind.limit is not None and used[kind.name] >= kind.limit:
            continue
        used[kind.name] += 1
        wanted.append(kind)
    wanted = wanted[:budget]
    replaced: dict[int, tuple[list[Item], Injected]] = {}
    free = list(range(len(items)))
    rng.shuffle(free)
    for kind in wanted:
        for attempt, position in enumerate(free):
            if attempt > 200:
                break
            result = kind.apply(items[position], rng)
            if result is not None:
                replaced[position] = (result, Injected(kind.name, kind.reason))
                free.remove(position)
                break
    out: list[tuple[Item, Injected | None]] = []
    for position, item in enumerate(items):
        if position not in replaced:
            out.append((item, None))
            continue
        result, injected = replaced[position]
        if injected.reason is None:  # a re-delivery: the original is clean, the copy is the duplicate
            out.append((result[0], None))
            out.extend((copy, injected) for copy in result[1:])
        else:
            out.extend((bad, injected) for bad in result)
    return out
