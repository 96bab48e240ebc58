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
from datetime import datetime, timedelta
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


@dataclass(frozen=True, slots=True)
class _DeviceMapping:
    """The per-message work of a device done once: each measure key's property, rule and converted texts."""

    measures: Mapping[str, tuple[str, MeasureRule | None, dict[str, float | int]]]
    ref_device: str
    span: timedelta | None
    """The observation window of a NoiseLevelObserved device, else None."""
    time_marks_end: bool

    @classmethod
    def of(cls, plan: DevicePlan, shared: dict[tuple[str, str, str], dict[str, float | int]]) -> _DeviceMapping:
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
        return cls(measures, device_urn(plan.device_id), span, marks_end)


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
        self._devices = {key: _DeviceMapping.of(plan, shared) for key, plan in self._plans.items()}
        self._routes: dict[str, tuple[DevicePlan, _DeviceMapping, str | None]] = {}

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        topic = message.topic
        route = self._routes.get(topic) if topic else None
        if route is None:
            route = self._resolve(topic)
        plan, device, single = route
        text = decode_text(message.payload).rstrip("\r\n ")
        if single is None and "#" not in text:
            usual = self._usual(plan, device, text, message.received_at)
            if usual is not None:
                return usual
        if single is not None:
            if not text or "|" in text or "#" in text:
                raise InvalidRecordError(
                    "ul_syntax",
                    f"a message on .../attrs/{single[:40]} must carry one plain value",
                    field=single,
                )
            groups = [self._group(plan, device, None, [(single, text)], message.received_at)]
        else:
            groups = [
                self._group(plan, device, stamp, pairs, message.received_at) for stamp, pairs in split_measures(text)
            ]
        if len(groups) == 1:  # the usual message: one group, one observation
            return [self._entity(plan, device, groups[0].moment, groups[0].values)]
        return [self._entity(plan, device, moment, values) for moment, values in merge_by_time(groups)]

    @classmethod
    def _usual(
        cls, plan: DevicePlan, device: _DeviceMapping, text: str, received_at: datetime
    ) -> list[ParsedEntity] | None:
        """The usual message in one pass: one group, perhaps with its timestamp, of measures whose texts
        were converted before. None for anything else (the general path then maps it, or says why not)."""
        fields = text.split("|")
        size = len(fields)
        first = 0
        if size % 2:
            if size == 1 or not fields[0][:1].isdigit():
                return None
            first = 1
        if text[:1] == "|" or "" in fields:
            return None
        values: dict[str, float | int] = {}
        measures = device.measures
        for position in range(first, size, 2):
            measure = measures.get(fields[position])
            if measure is None or measure[1] is None:
                return None
            value = measure[2].get(fields[position + 1])
            name = measure[0]
            if value is None or name in values:  # a text not converted yet; a key given twice
                return None
            values[name] = value
        moment = parse_instant(fields[0], field=TIME_INSTANT, zone=plan.tz) if first else received_at
        return [cls._entity(plan, device, moment, values)]

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
