"""Care module feed: home hubs of seniors living alone, one JSON event per message.

Each resident sleeps from a bedtime to a waking time of their own; the hub reports heart rate every
one to two hours (lower asleep), bed exits at night, door openings by day, long inactivity now and
then, and in the whole city a couple of falls and SOS presses a day.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

from governance.demo.city import ZONE, CityDay, Resident, poisson
from governance.demo.feeds import Capture, Defect, Feed, Item, redelivered, truncated_line

_OBSERVATIONS = frozenset({"heart_rate", "inactivity", "door_open", "bed_exit"})


class CareHubFeed(Feed):
    """Hub events of every resident, in the order they arrived."""

    adapter = "care-hub"
    input_name = "hub-events.jsonl"
    config_name = None

    def day(self, city: CityDay, rng: random.Random) -> list[Item]:
        midnight = datetime.combine(city.day, time(0), tzinfo=ZONE)
        events: list[tuple[datetime, Resident, str, Any, float | None]] = []

        def at(hour: float) -> datetime:
            return (midnight + timedelta(hours=hour, seconds=rng.randint(0, 59))).astimezone(UTC)

        def asleep(resident: Resident, hour: float) -> bool:
            return hour < resident.wake or hour >= resident.bedtime

        residents = self.plan.residents
        falls = set(rng.sample(range(len(residents)), min(len(residents), 1 + (rng.random() < 0.5))))
        sos = set(rng.sample(range(len(residents)), min(len(residents), 1 + (rng.random() < 0.5))))
        for index, resident in enumerate(residents):
            hour = rng.uniform(0.2, 1.5)
            while hour < 24:
                bpm = resident.heart_rate - (8 if asleep(resident, hour) else 0) + rng.gauss(0, 3)
                events.append((at(hour), resident, "heart_rate", round(bpm), round(rng.uniform(0.85, 0.99), 2)))
                hour += rng.uniform(1.0, 2.0)
            for _ in range(poisson(rng, 1.2)):  # up at night (bathroom)
                events.append((at(rng.uniform(0.5, resident.wake - 0.3)), resident, "bed_exit", None,
                               round(rng.uniform(0.8, 0.97), 2)))
            events.append((at(resident.wake), resident, "bed_exit", None, round(rng.uniform(0.85, 0.98), 2)))
            for _ in range(poisson(rng, 4.0)):
                events.append((at(rng.uniform(9.0, 20.0)), resident, "door_open", None, None))
            if resident.naps:
                nap_end = rng.uniform(15.5, 17.5)
                minutes = rng.randint(60, 150)
                events.append((at(nap_end), resident, "inactivity", minutes, round(rng.uniform(0.6, 0.9), 2)))
            elif rng.random() < 0.2:
                events.append((at(rng.uniform(10.5, 12.5)), resident, "inactivity", rng.randint(95, 240), None))
            awake = rng.uniform(max(resident.wake + 1.0, 9.0), min(resident.bedtime - 1.0, 20.5))
            if index in falls:
                sure = round(rng.choice((rng.uniform(0.82, 0.98), rng.uniform(0.55, 0.79))), 2)
                events.append((at(awake), resident, "fall_detected", None, sure))
                events.append((at(awake + 0.1), resident, "heart_rate", round(resident.heart_rate + 28), 0.9))
                events.append((at(awake + 0.6), resident, "inactivity", rng.randint(20, 40), 0.8))
            if index in sos:
                events.append((at(rng.uniform(resident.wake + 0.5, resident.bedtime - 0.5)), resident, "sos_button",
                               None, None))
        events.sort(key=lambda e: (e[0], e[1].hub, e[2]))
        out: list[Item] = []
        for moment, resident, event, value, confidence in events:
            stamp = (moment.strftime("%Y-%m-%dT%H:%M:%SZ") if resident.utc_hub
                     else moment.astimezone(ZONE).isoformat(timespec="seconds"))
            payload = {"hub": resident.hub, "resident": resident.id, "event": event, "value": value,
                       "confidence": confidence, "at": stamp}
            received = moment + timedelta(milliseconds=rng.randint(300, 2500))
            out.append(Capture(f"city/care/hubs/{resident.hub}/events", payload, received))
        return out

    def defects(self) -> Sequence[Defect]:
        return (
            Defect("local_time_no_offset", "timestamp_without_zone", _edit(
                lambda p: {**p, "at": datetime.fromisoformat(p["at"].replace("Z", "+00:00"))
                           .astimezone(ZONE).replace(tzinfo=None).isoformat()})),
            Defect("value_as_string", "wrong_type", _edit(
                lambda p: {**p, "value": str(p["value"])} if p["event"] == "heart_rate" else None)),
            Defect("confidence_in_percent", "out_of_range", _edit(
                lambda p: {**p, "confidence": round(p["confidence"] * 100)} if p["confidence"] else None)),
            Defect("firmware_event", "unknown_event", _edit(lambda p: {**p, "event": "medication_taken"}
                                                             if p["event"] in _OBSERVATIONS else None)),
            Defect("value_on_door", "unexpected_value", _edit(
                lambda p: {**p, "value": 1} if p["event"] in ("door_open", "bed_exit") else None)),
            Defect("no_hub", "missing_field", _edit(lambda p: {k: v for k, v in p.items() if k != "hub"})),
            Defect("latin1_note", "not_utf8", _latin1_line),
            Defect("truncated_line", "invalid_json", truncated_line),
            Defect("redelivery", None, redelivered, limit=2),
        )


def _edit(change: Any) -> Any:
    def apply(item: Item, _rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not isinstance(item.payload, dict):
            return None
        if item.payload["event"] in ("fall_detected", "sos_button"):
            return None  # the alerts of the day stay intact
        new = change(item.payload)
        return None if new is None else [replace(item, payload=new)]

    return apply


def _latin1_line(item: Item, _rng: random.Random) -> list[Item] | None:
    """A hub firmware that writes a free-text note in Latin-1 (the capture line is not UTF-8)."""
    if not isinstance(item, Capture) or not isinstance(item.payload, dict):
        return None
    if item.payload["event"] in ("fall_detected", "sos_button"):
        return None
    line = item.encode().decode("utf-8")
    return [replace(item, line=line.replace('"event"', '"nota":"caída leve","event"', 1).encode("latin-1"))]
