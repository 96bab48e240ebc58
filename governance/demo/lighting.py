"""Lighting module feeds: cabinet reports of the street lights, and the traffic counters.

Lamps burn from dusk to dawn at full power in the evening; after 23:00 (00:00 for semi-automatic
cabinets) they dim with the activity the nearest counter reports, down to 30 %. Power follows the dim
level, energy accumulates, and a few lamps fail during the day.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from governance.demo.city import SLOT, ZONE, ZONE_NAME, Cabinet, CityDay, CityPlan, local_hour, poisson
from governance.demo.feeds import (
    Capture,
    Defect,
    Feed,
    Item,
    oversized,
    redelivered,
    truncated_line,
    truncated_payload,
)

#: Fault codes the lighting system sends, with how long they last (slots) and what the lamp reports.
FAULTS: tuple[tuple[str, int | None], ...] = (
    ("lamp_failure", None),
    ("driver", None),
    ("communication", 6),
    ("low_voltage", 10),
    ("lamp_end_of_life", None),
)

STANDBY_W = 0.4


def dim_level(city: CityDay, cabinet: Cabinet, slot: int, moment: datetime) -> int:
    """The cabinet's dim level (percent) at ``moment``: 0 by day, 100 in the evening, adaptive at night."""
    if not city.is_dark(moment):
        return 0
    if cabinet.working_mode == "manual":
        return 100
    h = local_hour(moment)
    full_until = 24.0 if cabinet.working_mode == "semiautomatic" else 23.0
    if 12 <= h < full_until:
        return 100
    activity = city.activity(cabinet.counter, slot)
    level = 30 + 70 * min(1.0, activity / 0.5)
    if 5.5 <= h < 12:
        level = max(level, 60)  # early commuters
    return int(min(100, max(30, 5 * round(level / 5))))


class StreetlightFeed(Feed):
    """One JSON report per control cabinet every 15 minutes with all its lamps."""

    adapter = "streetlight-json"
    input_name = "cabinets.jsonl"
    config_name = "cabinet-sites.json"

    def __init__(self, plan: CityPlan, *, max_payload_bytes: int = 256 * 1024) -> None:
        super().__init__(plan, max_payload_bytes=max_payload_bytes)
        self.energy = {lamp.id: lamp.energy_wh for cabinet in plan.cabinets for lamp in cabinet.lamps}
        self.meters = {cabinet.id: cabinet.meter_kwh for cabinet in plan.cabinets}

    def config(self) -> dict[str, Any]:
        cabinets: dict[str, Any] = {}
        lamps: dict[str, Any] = {}
        for cabinet in self.plan.cabinets:
            site: dict[str, Any] = {"location": list(cabinet.location)}
            if cabinet.groups:
                site["groups"] = list(cabinet.groups)
            if cabinet.working_mode != "automatic":
                site["working_mode"] = cabinet.working_mode
            cabinets[cabinet.id] = site
            for lamp in cabinet.lamps:
                lamps[lamp.id] = {"location": list(lamp.location), **({"group": lamp.group} if lamp.group else {})}
        return {"default_working_mode": "automatic", "cabinets": cabinets, "lamps": lamps,
                "fault_status": {"lamp_cycling": "defectiveLamp"}}

    def _faults(self, city: CityDay, rng: random.Random) -> dict[str, tuple[int, int, str]]:
        lamps = [lamp.id for cabinet in self.plan.cabinets for lamp in cabinet.lamps]
        n = min(len(lamps), poisson(rng, 0.01 * len(lamps)) + (1 if len(lamps) >= 100 else 0))
        faults: dict[str, tuple[int, int, str]] = {}
        for lamp_id in rng.sample(lamps, n):
            code, lasts = rng.choice(FAULTS)
            start = rng.randrange(len(city.slots))
            faults[lamp_id] = (start, start + lasts if lasts else len(city.slots), code)
        return faults

    def day(self, city: CityDay, rng: random.Random) -> list[Item]:
        faults = self._faults(city, rng)
        out: list[Item] = []
        for slot, moment in enumerate(city.slots):
            for cabinet in self.plan.cabinets:
                dim = dim_level(city, cabinet, slot, moment)
                lamps: list[dict[str, Any]] = []
                total_w = 0.0
                for lamp in cabinet.lamps:
                    fault = faults.get(lamp.id)
                    code = fault[2] if fault and fault[0] <= slot < fault[1] else None
                    reading = self._lamp(lamp.id, lamp.rated_w, dim, code, rng)
                    total_w += reading["power_w"] or 0.0
                    lamps.append(reading)
                self.meters[cabinet.id] += (total_w + 15.0) / 1000 * SLOT.total_seconds() / 3600
                ts = moment + timedelta(seconds=rng.randint(0, 20), milliseconds=rng.randint(0, 999))
                payload = {"cabinet": cabinet.id, "ts": int(ts.timestamp() * 1000), "lamps": lamps,
                           "cabinet_kwh": round(self.meters[cabinet.id], 2)}
                received = ts + timedelta(milliseconds=rng.randint(150, 2500))
                out.append(Capture(f"city/lighting/cms/{cabinet.id}/status", payload, received))
        return out

    def _lamp(self, lamp_id: str, rated_w: float, dim: int, code: str | None, rng: random.Random) -> dict[str, Any]:
        hours = SLOT.total_seconds() / 3600
        if code == "communication":  # the node does not answer: no fresh readings
            return {"id": lamp_id, "state": None, "dim": None, "power_w": None, "energy_wh": None, "fault": code}
        if code in ("lamp_failure", "driver"):
            state, level, power = "OFF", 0, 0.0
        else:
            level = dim
            if level == 0:
                state, power = "OFF", STANDBY_W
            else:
                state = "ON" if level >= 50 else "LOW"
                power = rated_w * (0.06 + 0.94 * level / 100) * (1 + rng.gauss(0, 0.01))
                if code == "low_voltage":
                    power *= 0.68
                elif code == "lamp_end_of_life":
                    power *= rng.uniform(0.55, 1.15)
        power = round(max(power, 0.0), 1)
        self.energy[lamp_id] += power * hours
        return {"id": lamp_id, "state": state, "dim": level, "power_w": power,
                "energy_wh": round(self.energy[lamp_id], 1), "fault": code}

    def defects(self) -> Sequence[Defect]:
        return (
            Defect("truncated_payload", "invalid_json", truncated_payload),
            Defect("unknown_fault_code", "unknown_fault", _lamp_edit(lambda lamp, rng: {"fault": rng.choice(
                ("E-0x3F", "overtemp", "TILT"))})),
            Defect("dim_as_string", "wrong_type", _lamp_edit(
                lambda lamp, rng: {"dim": str(lamp["dim"])} if lamp.get("dim") is not None else None)),
            Defect("power_spike", "out_of_range", _lamp_edit(
                lambda lamp, rng: {"power_w": 5200.0} if lamp["fault"] != "communication" else None)),
            Defect("missing_ts", "missing_field", _without("ts")),
            Defect("unprovisioned_cabinet", "unknown_cabinet", _unprovisioned),
            Defect("latin1_lamp_id", "not_utf8", _latin1_lamp),
            Defect("oversized", "payload_too_large", oversized(self.max_payload_bytes), limit=1),
            Defect("redelivery", None, redelivered, limit=2),
        )


def _lamp_edit(change: Any) -> Any:
    def apply(item: Item, rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not isinstance(item.payload, dict):
            return None
        lamps = list(item.payload["lamps"])
        index = rng.randrange(len(lamps))
        edit = change(lamps[index], rng)
        if edit is None:
            return None
        lamps[index] = {**lamps[index], **edit}
        return [replace(item, payload={**item.payload, "lamps": lamps})]

    return apply


def _without(key: str) -> Any:
    def apply(item: Item, _rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not isinstance(item.payload, dict) or key not in item.payload:
            return None
        return [replace(item, payload={k: v for k, v in item.payload.items() if k != key})]

    return apply


def _unprovisioned(item: Item, _rng: random.Random) -> list[Item] | None:
    if not isinstance(item, Capture) or not isinstance(item.payload, dict):
        return None
    payload = {**item.payload, "cabinet": "CAB-0999"}
    return [replace(item, topic="city/lighting/cms/CAB-0999/status", payload=payload)]


def _latin1_lamp(item: Item, _rng: random.Random) -> list[Item] | None:
    if not isinstance(item, Capture) or not isinstance(item.payload, dict):
        return None
    text = orjson.dumps(item.payload).decode("utf-8")
    return [replace(item, payload=text.replace('"lamps"', '"l\u00e1mparas"', 1).encode("latin-1"))]


class TrafficCounterFeed(Feed):
    """Interval counts every 15 minutes, in local time without an offset."""

    adapter = "traffic-counter"
    input_name = "counts.jsonl"
    config_name = "counter-zones.json"

    def config(self) -> dict[str, Any]:
        sources: dict[str, Any] = {}
        for counter in self.plan.counters:
            site: dict[str, Any] = {"zone": ZONE_NAME, "location": list(counter.location)}
            if counter.road_segment:
                site["road_segment"] = counter.road_segment
            sources[counter.id] = site
        return {"default_zone": None, "sources": sources}

    def day(self, city: CityDay, rng: random.Random) -> list[Item]:
        out: list[Item] = []
        for slot, moment in enumerate(city.slots):
            start = moment - SLOT
            for index, counter in enumerate(self.plan.counters):
                seen = city.counts[index][slot]
                payload: dict[str, Any] = {"sensor": counter.id, "from": _local(start), "to": _local(moment)}
                if counter.kind != "road":
                    payload["pedestrians"] = {"in": seen.pedestrians_in, "out": seen.pedestrians_out}
                if counter.kind != "plaza":
                    payload["vehicles"] = dict(seen.vehicles)
                    if seen.vehicle_total:
                        payload["avg_speed_kmh"] = seen.speed
                if counter.sends_identifiers and seen.people:
                    payload["bt_macs"] = [
                        ":".join(f"{rng.randrange(256):02x}" for _ in range(6)) for _ in range(min(3, seen.people))
                    ]
                received = moment + timedelta(seconds=rng.randint(1, 9), milliseconds=rng.randint(0, 999))
                out.append(Capture(f"city/traffic/counters/{counter.id}/interval", payload, received))
        return out

    def defects(self) -> Sequence[Defect]:
        return (
            Defect("truncated_line", "invalid_json", truncated_line),
            Defect("count_as_string", "wrong_type", _count_edit(lambda n: str(n))),
            Defect("negative_count", "out_of_range", _count_edit(lambda n: -1 - n)),
            Defect("unconfigured_counter", "timestamp_without_zone", _unconfigured_counter),
            Defect("clock_glitch", "invalid_interval", _clock_glitch),
            Defect("redelivery", None, redelivered, limit=2),
        )


def _local(moment: datetime) -> str:
    return moment.astimezone(ZONE).replace(tzinfo=None).isoformat(timespec="seconds")


def _count_edit(change: Any) -> Any:
    def apply(item: Item, _rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not isinstance(item.payload, dict):
            return None
        payload = dict(item.payload)
        if "pedestrians" in payload:
            walkers = dict(payload["pedestrians"])
            walkers["in"] = change(walkers["in"])
            payload["pedestrians"] = walkers
        else:
            vehicles = dict(payload["vehicles"])
            vehicles["car"] = change(vehicles["car"])
            payload["vehicles"] = vehicles
        return [replace(item, payload=payload)]

    return apply


def _unconfigured_counter(item: Item, _rng: random.Random) -> list[Item] | None:
    if not isinstance(item, Capture) or not isinstance(item.payload, dict):
        return None
    payload = {**item.payload, "sensor": "TC-90"}
    return [replace(item, topic="city/traffic/counters/TC-90/interval", payload=payload)]


def _clock_glitch(item: Item, _rng: random.Random) -> list[Item] | None:
    if not isinstance(item, Capture) or not isinstance(item.payload, dict):
        return None
    return [replace(item, payload={**item.payload, "to": item.payload["from"]})]
