"""FIWARE UltraLight 2.0 measures over MQTT, mapped with IoT Agent style device provisioning.

A device publishes ``t|21.4|h|56|pm25|12.5`` on ``/ul/<apikey>/<device_id>/attrs`` (or
``/<apikey>/<device_id>/attrs``, as the IoT Agent also accepts). Measure groups are separated by
``#``; a group may start with its own timestamp (``2024-05-01T10:00:00Z|t|21.4``), and a measure
mapped to ``TimeInstant`` sets the time too. One value may also arrive alone on
``.../attrs/<object_id>``. The configuration mirrors the IoT Agent provisioning API (service groups
and devices, with ``attributes`` and ``static_attributes``); nothing that is not provisioned is
mapped, and units declared in ``metadata.unitCode`` are converted to the schema's units.

The table of monitoring quantities and the unit conversions live in ``adapters.units``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from adapters.base import Adapter, AdapterConfig
from adapters.fields import LOCAL_ID, decode_text
from adapters.units import (
    OBSERVED_TYPES,
    MeasureRule,
    ObservedType,
    device_urn,
    geo_point,
    measure_rule,
    observation_period,
    parse_decimal,
)
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage, entity_urn
from governance.ingest.timeparse import parse_instant, utc_iso, zone

# --------------------------------------------------------------------------------------------------
# Provisioning (mirrors the IoT Agent provisioning API)
# --------------------------------------------------------------------------------------------------

#: Attribute name that carries the observation time, as in FIWARE IoT Agents.
TIME_INSTANT = "TimeInstant"
_NUMBER_TYPES = frozenset({"Number", "Float", "Integer"})
_TIME_TYPES = frozenset({"DateTime", "ISO8601"})

#: Static attributes copied into the entity (besides ``location``), with the types they may have.
STATIC_TEXT: Mapping[str, frozenset[str]] = {
    "name": frozenset(OBSERVED_TYPES),
    "description": frozenset(OBSERVED_TYPES),
    "dataProvider": frozenset(OBSERVED_TYPES),
    "areaServed": frozenset({"AirQualityObserved"}),
    "typeofLocation": frozenset({"AirQualityObserved"}),
    "sonometerClass": frozenset({"NoiseLevelObserved"}),
    "refPointOfInterest": frozenset(OBSERVED_TYPES),
}

#: Static properties whose official model allows only some values.
STATIC_CHOICES: Mapping[str, tuple[str, ...]] = {
    "typeofLocation": ("indoor", "outdoor"),
    "sonometerClass": ("0", "1", "2"),
}


class Metadatum(AdapterConfig):
    """One attribute metadata item, NGSI v2 style: ``{"type": "Text", "value": "CEL"}``."""

    type: str = "Text"
    value: Any


class ProvisionedAttribute(AdapterConfig):
    """An active attribute: the measure ``object_id`` in the payload becomes property ``name``."""

    object_id: str | None = None
    """The key in the UltraLight payload; defaults to ``name``, as in the IoT Agent."""
    name: str = Field(min_length=1)
    type: str = "Number"
    metadata: dict[str, Metadatum] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.object_id or self.name

    @property
    def unit_code(self) -> str | None:
        item = self.metadata.get("unitCode")
        if item is None:
            return None
        if not isinstance(item.value, str) or not item.value:
            raise ValueError(f"attribute {self.name!r}: metadata.unitCode.value must be a UN/CEFACT code")
        return item.value


class StaticAttribute(AdapterConfig):
    """A value that is the same in every entity of a device (its location, its name)."""

    name: str = Field(min_length=1)
    type: str
    value: Any
    metadata: dict[str, Metadatum] = Field(default_factory=dict)


class ObservationWindow(AdapterConfig):
    """citygov extension for NoiseLevelObserved: the period each measure covers.

    ``time_marks`` says whether the measure time is the ``end`` (usual: a device reports a window
    after it closes) or the ``start`` of the window.
    """

    seconds: int = Field(gt=0, le=31 * 86400)
    time_marks: Literal["start", "end"]


class _IotAgentFields(AdapterConfig):
    """Fields of the IoT Agent provisioning API that are accepted so a real file loads, and ignored.

    citygov never provisions devices on the fly (``autoprovision``), sends no commands
    (``commands``, ``lazy``) and maps only provisioned attributes whatever ``explicitAttrs`` says.
    """

    service: str | None = None
    subservice: str | None = None
    protocol: str | None = None
    transport: str | None = None
    cbroker: str | None = None
    trust: str | None = None
    description: str | None = None
    timestamp: bool | None = None
    autoprovision: bool | None = None
    explicitAttrs: bool | None = None  # noqa: N815 (the IoT Agent's spelling)
    lazy: list[dict[str, Any]] = Field(default_factory=list)
    commands: list[dict[str, Any]] = Field(default_factory=list)
    internal_attributes: list[dict[str, Any]] | dict[str, Any] | None = None


class ServiceGroup(_IotAgentFields):
    """A service group (``/iot/services``): one API key and the defaults of its devices."""

    apikey: str = Field(min_length=1)
    entity_type: ObservedType | None = None
    resource: str = "/iot/d"
    timezone: str | None = None
    attributes: list[ProvisionedAttribute] = Field(default_factory=list)
    static_attributes: list[StaticAttribute] = Field(default_factory=list)
    observation_window: ObservationWindow | None = None


class ProvisionedDevice(_IotAgentFields):
    """A provisioned device (``/iot/devices``); its settings override its service group's."""

    device_id: str = Field(min_length=1)
    entity_name: str | None = None
    entity_type: ObservedType | None = None
    apikey: str | None = None
    timezone: str | None = None
    endpoint: str | None = None
    polling: bool | None = None
    attributes: list[ProvisionedAttribute] = Field(default_factory=list)
    static_attributes: list[StaticAttribute] = Field(default_factory=list)
    observation_window: ObservationWindow | None = None


class UltraLightConfig(AdapterConfig):
    """Provisioning file: ``{"services": [...], "devices": [...]}`` as the IoT Agent API takes them."""

    services: list[ServiceGroup] = Field(default_factory=list)
    devices: list[ProvisionedDevice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_provisioning(self) -> UltraLightConfig:
        resolve_provisioning(self)  # raises ValueError naming the device and the problem
        return self


@dataclass(frozen=True, slots=True)
class _Active:
    """A provisioned measure: a number (``rule``) or the observation time (``rule is None``)."""

    name: str
    rule: MeasureRule | None


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """Everything needed to map one device's messages, resolved once from the provisioning."""

    apikey: str
    device_id: str
    entity_id: str
    entity_type: str
    tz: ZoneInfo | None
    window: ObservationWindow | None
    active: Mapping[str, _Active]
    static: Mapping[str, Any] = field(default_factory=dict)


def resolve_provisioning(config: UltraLightConfig) -> dict[tuple[str, str], DevicePlan]:
    """Every device keyed by (API key, device id); ``ValueError`` for anything inconsistent."""
    services: dict[str, ServiceGroup] = {}
    for group in config.services:
        if group.apikey in services:
            raise ValueError(f"API key {group.apikey!r} is provisioned twice in services")
        services[group.apikey] = group
    plans: dict[tuple[str, str], DevicePlan] = {}
    for device in config.devices:
        where = f"device {device.device_id!r}"
        if device.apikey is not None:
            apikey = device.apikey
        elif len(services) == 1:
            apikey = next(iter(services))
        else:
            raise ValueError(f"{where} has no apikey and there are {len(services)} service groups")
        service = services.get(apikey)
        if (apikey, device.device_id) in plans:
            raise ValueError(f"{where} is provisioned twice under the same API key")
        plans[(apikey, device.device_id)] = _plan(device, service, apikey, where)
    return plans


def _plan(device: ProvisionedDevice, service: ServiceGroup | None, apikey: str, where: str) -> DevicePlan:
    entity_type = device.entity_type or (service.entity_type if service else None)
    if entity_type is None:
        raise ValueError(f"{where}: no entity_type on the device or its service group")
    if not LOCAL_ID.fullmatch(device.device_id):
        raise ValueError(f"{where}: device_id must be letters, digits, '.', '_' or '-' (at most 100)")
    entity_id = _entity_id(entity_type, device.entity_name or device.device_id, where)
    tz_name = device.timezone or (service.timezone if service else None)
    try:
        tz = zone(tz_name) if tz_name else None
    except ConfigurationError as exc:
        raise ValueError(f"{where}: {exc}") from None
    window = device.observation_window or (service.observation_window if service else None)
    if entity_type == "NoiseLevelObserved" and window is None:
        raise ValueError(
            f"{where}: NoiseLevelObserved needs an observation period; set observation_window "
            '{"seconds": ..., "time_marks": "end"|"start"} on the device or its service group'
        )
    merged: dict[str, ProvisionedAttribute] = {}
    for attr in [*(service.attributes if service else []), *device.attributes]:
        merged[attr.key] = attr  # a device attribute overrides the group's one with the same object_id
    active: dict[str, _Active] = {}
    names: dict[str, str] = {}
    for key, attr in merged.items():
        if attr.name in names:
            raise ValueError(f"{where}: object_ids {names[attr.name]!r} and {key!r} both map to {attr.name!r}")
        names[attr.name] = key
        active[key] = _active(attr, entity_type, f"{where}, attribute {attr.name!r}")
    if not any(a.rule is not None for a in active.values()):
        raise ValueError(f"{where}: no measured attribute is provisioned")
    static: dict[str, Any] = {}
    statics = {s.name: s for s in [*(service.static_attributes if service else []), *device.static_attributes]}
    for name, item in statics.items():
        static[name] = _static_value(item, entity_type, f"{where}, static attribute {name!r}")
    if "location" not in static:
        raise ValueError(f"{where}: no static attribute 'location' (the standard types require one)")
    return DevicePlan(apikey, device.device_id, entity_id, entity_type, tz, window, active, static)


def _entity_id(entity_type: str, name: str, where: str) -> str:
    prefix = f"urn:ngsi-ld:{entity_type}:"
    if name.startswith("urn:ngsi-ld:"):
        if not name.startswith(prefix):
            raise ValueError(f"{where}: entity_name {name!r} is not an id of type {entity_type}")
        local = name[len(prefix) :]
    else:
        local = name
    if not LOCAL_ID.fullmatch(local):
        raise ValueError(f"{where}: entity_name {name[:60]!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    return entity_urn(entity_type, local)


def _active(attr: ProvisionedAttribute, entity_type: str, where: str) -> _Active:
    if attr.name == TIME_INSTANT:
        if attr.type not in _TIME_TYPES:
            raise ValueError(f"{where}: TimeInstant must have type DateTime or ISO8601")
        return _Active(attr.name, None)
    if attr.type not in _NUMBER_TYPES:
        raise ValueError(f"{where}: type {attr.type!r} is not mapped (only Number attributes and TimeInstant)")
    try:
        rule = measure_rule(entity_type, attr.name, attr.unit_code)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return _Active(attr.name, rule)


def _static_value(item: StaticAttribute, entity_type: str, where: str) -> Any:
    if item.name == "location":
        return _static_location(item, where)
    allowed = STATIC_TEXT.get(item.name)
    if allowed is None or entity_type not in allowed:
        names = sorted(n for n, types in STATIC_TEXT.items() if entity_type in types)
        raise ValueError(f"{where}: not a static property of {entity_type} (known: location, {', '.join(names)})")
    if not isinstance(item.value, str) or not item.value:
        raise ValueError(f"{where}: value must be a non-empty string")
    choices = STATIC_CHOICES.get(item.name)
    if choices is not None and item.value not in choices:
        raise ValueError(f"{where}: value must be one of {', '.join(choices)}")
    return item.value


def _static_location(item: StaticAttribute, where: str) -> dict[str, Any]:
    value = item.value
    if item.type == "geo:point":
        # NGSI v2 simple location: "latitude, longitude"
        try:
            lat_text, lon_text = str(value).split(",")
            return geo_point(float(lon_text), float(lat_text), where=where)
        except ValueError as exc:
            raise ValueError(f"{where}: geo:point must be 'latitude, longitude' ({exc})") from None
    if item.type != "geo:json":
        raise ValueError(f"{where}: type must be geo:json (a GeoJSON Point) or geo:point")
    if not isinstance(value, dict) or value.get("type") != "Point":
        raise ValueError(f"{where}: value must be a GeoJSON Point")
    coords = value.get("coordinates")
    if (
        not isinstance(coords, list)
        or len(coords) not in (2, 3)
        or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords)
    ):
        raise ValueError(f"{where}: coordinates must be [longitude, latitude] numbers")
    point = geo_point(coords[0], coords[1], where=where)
    point["coordinates"] = list(coords)
    return point


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------

_COMMAND_TOPICS = frozenset({"cmd", "cmdexe", "configuration"})
_MAX_GROUPS = 100


@dataclass(slots=True)
class _Group:
    """One parsed measure group: its time and its mapped values."""

    moment: datetime
    values: dict[str, float | int]


#: Topics remembered per adapter, and converted texts per (type, property, unit); emptied when full.
ROUTES_KEPT = 4096
VALUES_KEPT = 4096
#: Key sequences remembered per device, and times written per clock (zone and window); emptied when full.
SHAPES_KEPT = 64
STAMPS_KEPT = 4096
MINUTES_KEPT = 4096

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: ``minutes since 1970`` → ``"YYYY-MM-DDTHH:MM:"`` as :func:`utc_iso` writes it (receipt times).
_MINUTES: dict[int, str] = {}


def received_iso(moment: datetime) -> str:
    """:func:`utc_iso` of a receipt time, quicker: each minute's text is written once (times are not ids)."""
    if moment.tzinfo is not UTC:
        return utc_iso(moment)
    since = moment - _EPOCH
    seconds = since.seconds
    minute = since.days * 1440 + seconds // 60
    head = _MINUTES.get(minute)
    if head is None:
        head = utc_iso(moment.replace(second=0, microsecond=0))[:-3]  # "…THH:MM:00Z" → "…THH:MM:"
        if len(_MINUTES) >= MINUTES_KEPT:
            _MINUTES.clear()
        _MINUTES[minute] = head
    fraction = moment.microsecond
    if fraction:
        return head + _SECONDS[seconds % 60] + _MILLISECONDS[fraction // 1000]
    return head + _SECONDS[seconds % 60] + "Z"


_SECONDS = tuple(f"{n:02d}" for n in range(60))
_MILLISECONDS = tuple(f".{n:03d}Z" for n in range(1000))


class _Clock:
    """The times of the devices that share a zone and an observation window: a time text, as written in a
    payload, → the entity's time properties (``dateObserved``, or the three of a period). Only texts read
    without a problem are kept; a device time is no one's identifier."""

    __slots__ = ("marks_end", "span", "texts", "tz")

    def __init__(self, tz: ZoneInfo | None, span: timedelta | None, marks_end: bool) -> None:
        self.tz = tz
        self.span = span
        self.marks_end = marks_end
        self.texts: dict[str, Any] = {}

    def read(self, text: str, field: str) -> Any:
        """The time properties of ``text`` (kept), or None if it is not a usable time (not kept)."""
        try:
            moment = parse_instant(text, field=field, zone=self.tz)
            written = self.properties(moment)
        except Exception:  # the general path says what is wrong (or raises the same)
            return None
        texts = self.texts
        if len(texts) >= STAMPS_KEPT:
            texts.clear()
        texts[text] = written
        return written

    def properties(self, moment: datetime) -> Any:
        span = self.span
        if span is None:
            return utc_iso(moment)
        start, end = (moment - span, moment) if self.marks_end else (moment, moment + span)
        period = observation_period(start, end)
        return (period["dateObservedFrom"], period["dateObservedTo"], period["dateObserved"])


#: Properties an entity gets besides its static and measured ones.
_RESERVED = frozenset({"id", "type", "dateObserved", "dateObservedFrom", "dateObservedTo", "refDevice"})


@dataclass(frozen=True, slots=True)
class _Shape:
    """One key sequence of a device's usual message (all provisioned, none twice, one measured at least)."""

    names: tuple[str, ...]
    """The property of each measured key, in the order of the payload (the time key left out)."""
    tables: tuple[dict[str, Any], ...]
    """Per key: its converted texts, or the clock's texts for the time key."""
    rules: tuple[MeasureRule | None, ...]
    keys: tuple[str, ...]
    time_at: int
    """Where the TimeInstant key is, or -1."""
    instant: bool
    """True when the entity's time is an instant (``dateObserved``), False for a period."""
    stamps: dict[str, Any]
    """The device clock's texts (leading timestamps and TimeInstant values read before)."""
    template: dict[str, Any]
    """The entity with its keys in their final order: id, type, time properties, static ones, measured ones,
    refDevice (a copy gets the time and the values of each message)."""


@dataclass(frozen=True, slots=True)
class _DeviceMapping:
    """The per-message work of a device done once: each measure key's property, rule and converted texts,
    the entity's fixed parts, the clock its times are read with and the key sequences it was seen to send."""

    measures: Mapping[str, tuple[str, MeasureRule | None, dict[str, float | int]]]
    ref_device: str
    span: timedelta | None
    """The observation window of a NoiseLevelObserved device, else None."""
    time_marks_end: bool
    entity_id: str
    entity_type: str
    static: Mapping[str, Any]
    clock: _Clock
    shapes: dict[tuple[str, ...], _Shape]

    @classmethod
    def of(
        cls,
        plan: DevicePlan,
        shared: dict[tuple[str, str, str], dict[str, float | int]],
        clocks: dict[tuple[ZoneInfo | None, timedelta | None, bool], _Clock],
    ) -> _DeviceMapping:
        measures: dict[str, tuple[str, MeasureRule | None, dict[str, float | int]]] = {}
        for key, active in plan.active.items():
            rule = active.rule
            if rule is None:
                measures[key] = (active.name, None, {})
                continue
            # Rules of the same property and source unit convert alike: their converted texts are shared.
            seen = shared.setdefault((rule.entity_type, rule.prop, rule.source_unit), {})
            measures[key] = (active.name, rule, seen)
        span = None
        marks_end = True
        if plan.entity_type == "NoiseLevelObserved":
            assert plan.window is not None
            span = timedelta(seconds=plan.window.seconds)
            marks_end = plan.window.time_marks == "end"
        clock = clocks.get((plan.tz, span, marks_end))
        if clock is None:
            clock = clocks[(plan.tz, span, marks_end)] = _Clock(plan.tz, span, marks_end)
        return cls(
            measures, device_urn(plan.device_id), span, marks_end, plan.entity_id, plan.entity_type,
            dict(plan.static), clock, {},
        )

    def shape(self, keys: tuple[str, ...]) -> _Shape | None:
        """The shape of a key sequence, remembered; None if it is not a usual one (nothing is then kept)."""
        names: list[str] = []
        tables: list[dict[str, Any]] = []
        rules: list[MeasureRule | None] = []
        time_at = -1
        for position, key in enumerate(keys):
            measure = self.measures.get(key)
            if measure is None or keys.index(key) != position:  # not provisioned; given twice
                return None
            name, rule, seen = measure
            if rule is None:
                time_at = position
                tables.append(self.clock.texts)
            else:
                names.append(name)
                tables.append(seen)
            rules.append(rule)
        static = self.static.keys()
        if not names or not _RESERVED.isdisjoint([*names, *static]) or not static.isdisjoint(names):
            return None  # (no measured value; a property that would take another's place: the general path)
        times = ("dateObserved",) if self.span is None else ("dateObservedFrom", "dateObservedTo", "dateObserved")
        template = {
            "id": self.entity_id, "type": self.entity_type, **dict.fromkeys(times), **self.static,
            **dict.fromkeys(names), "refDevice": self.ref_device,
        }
        found = _Shape(
            tuple(names), tuple(tables), tuple(rules), keys, time_at, self.span is None, self.clock.texts, template
        )
        if len(self.shapes) >= SHAPES_KEPT:
            self.shapes.clear()
        self.shapes[keys] = found
        return found


class UltraLightAdapter(Adapter):
    """UltraLight 2.0 measures → AirQualityObserved / NoiseLevelObserved / WeatherObserved."""

    name = "ultralight"
    version = "1.0.0"
    module = "monitoring"
    source_format = "UltraLight 2.0 text 'k|v|k|v' (groups '#', optional timestamp) on /ul/<apikey>/<device>/attrs"
    target_types = OBSERVED_TYPES
    transport = "mqtt"
    config_model = UltraLightConfig
    requires_config = True

    def __init__(self, config: AdapterConfig | None = None, *, config_ref: str | None = None) -> None:
        super().__init__(config, config_ref=config_ref)
        assert isinstance(self.config, UltraLightConfig)
        try:
            self._plans = resolve_provisioning(self.config)
        except ValueError as exc:  # only reachable if the model was built without validation
            raise ConfigurationError(str(exc)) from exc
        self._apikeys = {service.apikey for service in self.config.services} | {
            plan.apikey for plan in self._plans.values()
        }
        # Everything a message of a device needs beyond its payload, resolved once: by device, and by the
        # topic as it arrives (only topics that name a provisioned device are kept).
        shared: dict[tuple[str, str, str], dict[str, float | int]] = {}
        clocks: dict[tuple[ZoneInfo | None, timedelta | None, bool], _Clock] = {}
        self._devices = {key: _DeviceMapping.of(plan, shared, clocks) for key, plan in self._plans.items()}
        self._routes: dict[str, tuple[DevicePlan, _DeviceMapping, str | None]] = {}

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        topic = message.topic
        route = self._routes.get(topic) if topic else None
        if route is None:
            route = self._resolve(topic)
        plan, device, single = route
        text = decode_text(message.payload).rstrip("\r\n ")
        if single is None:
            usual = _usual(device, text, message.received_at)
            if usual is not None:
                return usual
        return self._general(plan, device, single, text, message.received_at)

    def _general(
        self, plan: DevicePlan, device: _DeviceMapping, single: str | None, text: str, received_at: datetime
    ) -> list[ParsedEntity]:
        """Any message: its entities, or the first problem found (the usual message is :func:`_usual`'s)."""
        if single is not None:
            if not text or "|" in text or "#" in text:
                raise InvalidRecordError(
                    "ul_syntax",
                    f"a message on .../attrs/{single[:40]} must carry one plain value",
                    field=single,
                )
            groups = [self._group(plan, device, None, [(single, text)], received_at)]
        else:
            groups = [self._group(plan, device, stamp, pairs, received_at) for stamp, pairs in split_measures(text)]
        if len(groups) == 1:  # the usual message: one group, one observation
            return [self._entity(plan, device, groups[0].moment, groups[0].values)]
        return [self._entity(plan, device, moment, values) for moment, values in merge_by_time(groups)]

    def _resolve(self, topic: str | None) -> tuple[DevicePlan, _DeviceMapping, str | None]:
        """The device a topic names, or the reason it names none; a topic that names one is remembered."""
        apikey, device_id, single = self._route(topic)
        if apikey not in self._apikeys:
            raise InvalidRecordError(
                "unknown_apikey", f"API key {apikey[:40]!r} in the topic is not provisioned", field="topic"
            )
        plan = self._plans.get((apikey, device_id))
        if plan is None:
            raise InvalidRecordError(
                "unknown_device",
                f"device {device_id[:60]!r} is not provisioned under API key {apikey[:40]!r}",
                field="topic",
            )
        assert topic is not None
        route = (plan, self._devices[(apikey, device_id)], single)
        if len(self._routes) >= ROUTES_KEPT:  # spellings of a topic ('//ul/…') are not bounded by devices
            self._routes.clear()
        self._routes[topic] = route
        return route

    # -- topic ------------------------------------------------------------------------------------

    @staticmethod
    def _route(topic: str | None) -> tuple[str, str, str | None]:
        """(API key, device id, single attribute or None) from an IoT Agent measure topic."""
        if not topic:
            raise InvalidRecordError(
                "missing_field",
                "the message has no MQTT topic (expected /ul/<apikey>/<device>/attrs)",
                field="topic",
            )
        parts = topic.strip("/").split("/")
        if len(parts) >= 4 and parts[0] == "ul" and parts[3] in ("attrs", *_COMMAND_TOPICS):
            parts = parts[1:]
        if len(parts) >= 3 and all(parts[:3]) and parts[2] in _COMMAND_TOPICS:
            raise InvalidRecordError(
                "not_a_measure",
                f"topic '{topic[:100]}' carries a command or configuration message ({parts[2]}), not measures",
                field="topic",
            )
        if len(parts) in (3, 4) and parts[2] == "attrs" and all(parts):
            return parts[0], parts[1], parts[3] if len(parts) == 4 else None
        raise InvalidRecordError(
            "invalid_topic",
            f"topic '{topic[:100]}' is not /ul/<apikey>/<device>/attrs[/<object_id>] "
            "or /<apikey>/<device>/attrs[/<object_id>]",
            field="topic",
        )

    # -- measures ---------------------------------------------------------------------------------

    def _group(
        self,
        plan: DevicePlan,
        device: _DeviceMapping,
        stamp: str | None,
        pairs: list[tuple[str, str]],
        received_at: datetime,
    ) -> _Group:
        moment: datetime | None = None
        if stamp is not None:
            moment = parse_instant(stamp, field=TIME_INSTANT, zone=plan.tz)
        values: dict[str, float | int] = {}
        measures = device.measures
        for key, raw in pairs:
            measure = measures.get(key)
            if measure is None:
                known = ", ".join(sorted(plan.active))
                raise InvalidRecordError(
                    "unknown_attribute",
                    f"measure '{key[:40]}' is not provisioned for device {plan.device_id!r} (known: {known})",
                    field=key[:64],
                )
            name, rule, seen = measure
            if rule is None:  # TimeInstant
                instant = parse_instant(raw, field=key, zone=plan.tz)
                if moment is not None and instant != moment:
                    raise InvalidRecordError(
                        "conflicting_values",
                        f"the group carries two different times (leading timestamp and '{key}')",
                        field=key,
                    )
                moment = instant
                continue
            value = seen.get(raw)
            if value is None:  # the same readings come again and again: each text is converted once
                value = rule.apply(parse_decimal(raw, field=key), field=key)
                if len(seen) >= VALUES_KEPT:
                    seen.clear()
                seen[raw] = value
            values[name] = value
        if not values:
            raise InvalidRecordError("missing_field", "a measure group carries no measured value")
        return _Group(moment or received_at, values)

    @staticmethod
    def _entity(
        plan: DevicePlan, device: _DeviceMapping, moment: datetime, values: dict[str, float | int]
    ) -> ParsedEntity:
        data: dict[str, Any]
        if device.span is not None:  # NoiseLevelObserved: a period
            start, end = (moment - device.span, moment) if device.time_marks_end else (moment, moment + device.span)
            data = {"id": plan.entity_id, "type": plan.entity_type, **observation_period(start, end)}
        else:
            data = {"id": plan.entity_id, "type": plan.entity_type, "dateObserved": utc_iso(moment)}
        data.update(plan.static)
        data.update(values)
        data["refDevice"] = device.ref_device
        return ParsedEntity(data)


def _usual(device: _DeviceMapping, text: str, received_at: datetime) -> list[ParsedEntity] | None:
    """The usual message in one pass: one group of provisioned keys, none twice, perhaps with its time
    (leading, or as the TimeInstant measure). None for anything else, and for any value or time that does
    not read: the general path then maps the message or says what is wrong, as it always did."""
    if "#" in text:
        return None
    fields = text.split("|")
    if len(fields) % 2:
        stamp: str | None = fields[0]
        keys = tuple(fields[1::2])
        raws = fields[2::2]
    else:
        stamp = None
        keys = tuple(fields[0::2])
        raws = fields[1::2]
    shape = device.shapes.get(keys)
    if shape is None:
        shape = device.shape(keys)
        if shape is None:
            return None
    found = list(map(dict.get, shape.tables, raws))
    if None in found and not _convert(device, shape, raws, found):
        return None
    data = shape.template.copy()  # (its keys are all there: the entity is filled in, never reordered)
    when: Any
    if stamp is None:
        if shape.time_at >= 0:
            when = found.pop(shape.time_at)
        elif shape.instant:  # the most usual of all: the time is the receipt's
            data["dateObserved"] = received_iso(received_at)
            data.update(zip(shape.names, found, strict=True))
            return [ParsedEntity(data)]
        else:
            when = device.clock.properties(received_at)
    elif shape.time_at >= 0 or not stamp[:1].isdigit():
        return None  # two times (the general path compares them); a key lacking its value (refused)
    else:
        when = shape.stamps.get(stamp) or device.clock.read(stamp, TIME_INSTANT)
        if when is None:
            return None
    if shape.instant:
        data["dateObserved"] = when
    else:
        data["dateObservedFrom"], data["dateObservedTo"], data["dateObserved"] = when
    data.update(zip(shape.names, found, strict=True))
    return [ParsedEntity(data)]


def _convert(device: _DeviceMapping, shape: _Shape, raws: list[str], found: list[Any]) -> bool:
    """Fill in the values (and time) not read before, remembering them; False if one does not read."""
    for position, value in enumerate(found):
        if value is not None:
            continue
        raw = raws[position]
        key = shape.keys[position]
        rule = shape.rules[position]
        if rule is None:
            value = device.clock.read(raw, key)
            if value is None:
                return False
        else:
            try:
                value = rule.apply(parse_decimal(raw, field=key), field=key)
            except Exception:  # the general path says what is wrong (or raises the same)
                return False
            seen = shape.tables[position]
            if len(seen) >= VALUES_KEPT:
                seen.clear()
            seen[raw] = value
        found[position] = value
    return True


def split_measures(text: str) -> list[tuple[str | None, list[tuple[str, str]]]]:
    """UltraLight 2.0 measure groups: ``[(timestamp or None, [(key, value), ...]), ...]``.

    As in the IoT Agent: groups are split on ``#``, fields on ``|``; a leading ``|`` is dropped; empty
    fields are refused; an odd number of fields means the first one is the group's timestamp.
    A key repeated in one group is refused rather than resolved (which value would be right?).
    """
    if not text:
        raise InvalidRecordError("ul_syntax", "the payload is empty")
    groups = text.split("#")
    if len(groups) > _MAX_GROUPS:
        raise InvalidRecordError("ul_syntax", f"the payload has {len(groups)} measure groups (at most {_MAX_GROUPS})")
    parsed: list[tuple[str | None, list[tuple[str, str]]]] = []
    for number, group in enumerate(groups, start=1):
        fields = (group[1:] if group.startswith("|") else group).split("|")
        if "" in fields:
            raise InvalidRecordError(
                "ul_syntax", f"measure group {number} has an empty field (check for '||', a trailing '|' or '#')"
            )
        stamp: str | None = None
        if len(fields) % 2 == 1:
            if len(fields) == 1 or not fields[0][:1].isdigit():
                raise InvalidRecordError(
                    "ul_syntax",
                    f"measure group {number} has an odd number of fields ({len(fields)}) and does not start "
                    "with a timestamp: a key lacks its value",
                )
            stamp, fields = fields[0], fields[1:]
        keys = fields[0::2]
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            for key in keys:
                if key in seen:
                    raise InvalidRecordError(
                        "ul_syntax", f"measure group {number} carries '{key[:40]}' twice", field=key[:64]
                    )
                seen.add(key)
        parsed.append((stamp, list(zip(keys, fields[1::2], strict=True))))
    return parsed


def merge_by_time(groups: list[_Group]) -> list[tuple[datetime, dict[str, float | int]]]:
    """Groups observed at the same instant form one observation; a property given twice differently is refused."""
    merged: dict[datetime, dict[str, float | int]] = {}
    for group in groups:
        target = merged.setdefault(group.moment, {})
        for name, value in group.values.items():
            if name in target and target[name] != value:
                raise InvalidRecordError(
                    "conflicting_values",
                    f"'{name}' has two different values at {utc_iso(group.moment)} in one message",
                    field=name,
                )
            target[name] = value
    return list(merged.items())  # in the order the groups came
