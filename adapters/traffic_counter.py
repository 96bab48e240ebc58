"""People and vehicle counters posting interval counts in local time, without a UTC offset.

``{"sensor": "TC-17", "from": "2026-11-20T07:00:00", "to": "2026-11-20T07:15:00", "pedestrians":
{"in": 12, "out": 9}, "vehicles": {"car": 31, "bus": 2, "bicycle": 5}, "avg_speed_kmh": 28.4}`` becomes
one ``CrowdFlowObserved`` and ``TrafficFlowObserved`` entities (all vehicles, then one per class).

Counts only: whatever else a counter sends (plates, MAC or Bluetooth addresses, face ids…) is never
carried over; the entities name the removed keys in ``removed_fields``, never their values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from adapters.base import Adapter, AdapterConfig
from adapters.fields import decode_json_object, local_id, number, obj_field, require, unknown_keys
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage, entity_urn
from governance.ingest.timeparse import parse_instant, utc_iso, zone

#: Vehicle classes of the counters → official ``TrafficFlowObserved.vehicleType``.
VEHICLE_TYPES: dict[str, str] = {
    "car": "car",
    "bus": "bus",
    "minibus": "minibus",
    "bicycle": "bicycle",
    "motorcycle": "motorcycle",
    "moped": "moped",
    "van": "van",
    "lorry": "lorry",
    "truck": "lorry",
    "tram": "tram",
}

MESSAGE_FIELDS = frozenset({"sensor", "from", "to", "pedestrians", "vehicles", "avg_speed_kmh"})
PEDESTRIAN_FIELDS = frozenset({"in", "out"})

#: Counters report intervals of minutes to hours; a longer one is a broken clock, not a count.
MAX_INTERVAL = timedelta(hours=24)
MAX_SPEED_KMH = 300


class CounterSite(AdapterConfig):
    """What the configuration knows about one counter."""

    zone: str | None = None
    """IANA time zone of the counter's clock; default: ``default_zone``."""
    location: tuple[float, float] | None = None
    """[longitude, latitude] (WGS84)."""
    road_segment: str | None = None
    """RoadSegment local id the counter observes."""

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @field_validator("location")
    @classmethod
    def _check_location(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (-180 <= value[0] <= 180 and -90 <= value[1] <= 90):
            raise ValueError("location must be [longitude, latitude] within [-180, 180] and [-90, 90]")
        return value


class TrafficCounterConfig(AdapterConfig):
    """Time zones (the counters send local time) and sites, by sensor id."""

    default_zone: str | None = None
    sources: dict[str, CounterSite] = Field(default_factory=dict)

    @field_validator("default_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return _check_zone(value)


def _check_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            zone(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
    return value


class TrafficCounterAdapter(Adapter):
    """One interval count → CrowdFlowObserved and TrafficFlowObserved entities (counts only)."""

    name = "traffic-counter"
    version = "1.0.0"
    module = "lighting"
    source_format = "MQTT JSON interval counts in local time without offset (zone configured per sensor)"
    target_types = ("CrowdFlowObserved", "TrafficFlowObserved")
    transport = "mqtt"
    config_model = TrafficCounterConfig

    config: TrafficCounterConfig

    def __init__(self, config: AdapterConfig | None = None, *, config_ref: str | None = None) -> None:
        super().__init__(config, config_ref=config_ref)
        self._sites: dict[str, _Site] = {}

    def _site(self, sensor: str) -> _Site:
        """What the configuration says about a counter, resolved once per sensor id."""
        site = self._sites.get(sensor)
        if site is None:
            if len(self._sites) >= SITES_KEPT:  # ids of counters that are not configured are not bounded
                self._sites.clear()
            site = self._sites[sensor] = _Site.of(sensor, self.config)
        return site

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        body = decode_json_object(message.payload)
        removed = list(unknown_keys(body, MESSAGE_FIELDS))
        sensor = local_id(body, "sensor")
        site = self._site(sensor)
        tz = site.tz
        start = parse_instant(require(body, "from"), field="from", zone=tz)
        end = parse_instant(require(body, "to"), field="to", zone=tz)
        if start >= end:
            raise InvalidRecordError(
                "invalid_interval", "'from' must be earlier than 'to' (after conversion to UTC)", field="from"
            )
        if end - start > MAX_INTERVAL:
            raise InvalidRecordError(
                "out_of_range", "the interval from 'from' to 'to' is longer than 24 hours", field="to"
            )
        walkers = body.get("pedestrians")
        vehicles = body.get("vehicles")
        if walkers is None and vehicles is None:
            raise InvalidRecordError(
                "missing_field", "the message has neither 'pedestrians' nor 'vehicles' counts", field="vehicles"
            )
        begin, finish = utc_iso(start), utc_iso(end)
        common: dict[str, Any] = {
            "dateObserved": f"{begin}/{finish}",
            "dateObservedFrom": begin,
            "dateObservedTo": finish,
        }
        if site.location is not None:
            common["location"] = {"type": "Point", "coordinates": list(site.location)}
        if site.road_segment is not None:
            common["refRoadSegment"] = site.road_segment

        out: list[dict[str, Any]] = []
        if walkers is not None:
            walkers = obj_field(body, "pedestrians")
            removed += unknown_keys(walkers, PEDESTRIAN_FIELDS, path="pedestrians.")
            towards = walkers.get("in")
            if towards.__class__ is not int or towards < 0:  # the usual count passes as it is
                towards = count(walkers, "in", path="pedestrians.")
            away = walkers.get("out")
            if away.__class__ is not int or away < 0:
                away = count(walkers, "out", path="pedestrians.")
            out.append(
                {
                    "id": site.crowd_id,
                    "type": "CrowdFlowObserved",
                    **common,
                    "peopleCount": towards + away,
                    "peopleCountTowards": towards,
                    "peopleCountAway": away,
                }
            )
        speed = number(body, "avg_speed_kmh", required=False, minimum=0, maximum=MAX_SPEED_KMH)
        per_class: dict[str, int] = {}
        if vehicles is not None:
            vehicles = obj_field(body, "vehicles")
            removed += unknown_keys(vehicles, VEHICLE_KEYS, path="vehicles.")
            classes = 0
            for key in vehicles:
                vehicle_type = VEHICLE_TYPES.get(key)
                if vehicle_type is not None:
                    n = vehicles[key]
                    per_class[vehicle_type] = (
                        n if n.__class__ is int and n >= 0 else count(vehicles, key, path="vehicles.")
                    )
                    classes += 1
            if len(per_class) < classes:
                raise InvalidRecordError(
                    "duplicate_field", "'vehicles' names the same vehicle class twice (truck and lorry)",
                    field="vehicles",
                )
            if per_class:
                total: dict[str, Any] = {
                    "id": site.traffic_id,
                    "type": "TrafficFlowObserved",
                    **common,
                    "intensity": sum(per_class.values()),
                }
                if speed is not None:
                    total["averageVehicleSpeed"] = speed  # km/h, over all vehicles counted
                out.append(total)
                class_ids = site.class_ids
                out.extend(
                    {
                        "id": class_ids[vehicle_type],
                        "type": "TrafficFlowObserved",
                        **common,
                        "vehicleType": vehicle_type,
                        "intensity": n,
                    }
                    for vehicle_type, n in sorted(per_class.items())
                )
        if speed is not None and not per_class:  # TrafficFlowObserved entities come from vehicle classes only
            raise InvalidRecordError(
                "missing_field", "'avg_speed_kmh' is given without any vehicle counts", field="avg_speed_kmh"
            )
        if not out:
            raise InvalidRecordError(
                "missing_field", "the message carries no count the adapter knows", field="vehicles"
            )
        names = tuple(sorted(set(removed))) if removed else ()
        return [ParsedEntity(entity, removed_fields=names) for entity in out]


#: Sensors whose configuration is kept resolved (emptied when full).
SITES_KEPT = 4096
VEHICLE_KEYS = frozenset(VEHICLE_TYPES)


@dataclass(frozen=True, slots=True)
class _Site:
    """A counter's configuration as the mapping needs it: time zone, place and entity ids."""

    tz: ZoneInfo | None
    location: tuple[float, float] | None
    road_segment: str | None
    """The ``refRoadSegment`` URN."""
    crowd_id: str
    traffic_id: str
    class_ids: Mapping[str, str]
    """TrafficFlowObserved id of each vehicle type."""

    @classmethod
    def of(cls, sensor: str, config: TrafficCounterConfig) -> _Site:
        site = config.sources.get(sensor)
        zone_name = (site.zone if site else None) or config.default_zone
        return cls(
            tz=zone(zone_name) if zone_name else None,
            location=site.location if site else None,
            road_segment=entity_urn("RoadSegment", site.road_segment) if site and site.road_segment else None,
            crowd_id=entity_urn("CrowdFlowObserved", sensor),
            traffic_id=entity_urn("TrafficFlowObserved", sensor),
            class_ids={v: entity_urn("TrafficFlowObserved", f"{sensor}-{v}") for v in set(VEHICLE_TYPES.values())},
        )


def count(obj: dict[str, Any], key: str, *, path: str) -> int:
    """A count: a whole number, zero or more."""
    value = number(obj, key, path=path, minimum=0)
    if not isinstance(value, int):
        raise InvalidRecordError(
            "wrong_type", f"field '{path}{key}' must be a whole number, got {value!r}", field=f"{path}{key}"
        )
    return value
