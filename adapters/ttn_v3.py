"""The Things Stack (TTN / TTI) v3 application uplinks from LoRaWAN environmental sensors.

An uplink (MQTT ``v3/<app>@<tenant>/devices/<device>/up``, a webhook, or the Storage Integration, whose
``{"result": {...}}`` wrapper is accepted) carries ``end_device_ids``, ``received_at`` (RFC 3339 with
nanoseconds) and ``uplink_message`` with the payload formatter's ``decoded_payload``, ``f_port``,
``f_cnt``, ``rx_metadata[]`` and ``locations.user``. A device profile maps each ``decoded_payload`` key
to a property of AirQualityObserved, NoiseLevelObserved, WeatherObserved or Device, with its unit. Each
uplink becomes one entity per observed type it carries plus one ``Device`` (battery, best RSSI, last
report time). Join accepts, downlink events and MAC-only uplinks are refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adapters.base import Adapter, AdapterConfig
from adapters.fields import LOCAL_ID, decode_json_object, describe, obj_field, string
from adapters.units import (
    OBSERVED_TYPES,
    QUANTITIES,
    MeasureRule,
    Quantity,
    device_urn,
    geo_point,
    measure_rule,
    observation_period,
)
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage, entity_urn
from governance.ingest.timeparse import UTC_TEXT, parse_instant, utc_iso

TargetType = Literal["AirQualityObserved", "NoiseLevelObserved", "WeatherObserved", "Device"]

#: Pseudo-property of NoiseLevelObserved: the length of the window the levels cover.
OBSERVATION_PERIOD = "observationPeriod"
_PERIOD_UNITS: Mapping[str, int] = {"SEC": 1, "MIN": 60}
_BATTERY = Quantity("C62", 0, 1, "batterySupply")

#: Message kinds of the Application Server other than uplinks, as they appear in the JSON.
OTHER_EVENTS = (
    "join_accept",
    "downlink_ack",
    "downlink_nack",
    "downlink_sent",
    "downlink_failed",
    "downlink_queued",
    "downlink_queue_invalidated",
    "location_solved",
    "service_data",
)

_FRACTION = re.compile(r"(\.\d+)")


def parse_rfc3339(value: Any, *, field: str) -> datetime:
    """An RFC 3339 timestamp as The Things Stack writes it (nanoseconds), as an aware UTC datetime.

    Python's ``datetime`` holds microseconds: the fraction is truncated (never rounded, which could
    carry into the next second) before parsing. A time without an offset is refused.
    """
    if value.__class__ is str and UTC_TEXT.fullmatch(value):
        return parse_instant(value, field=field, zone=None)  # Python cuts a fraction to microseconds itself
    if isinstance(value, str):
        head, sep, rest = value.partition("T")
        match = _FRACTION.search(rest) if sep else None
        if match is not None and len(match.group(1)) > 7:
            rest = rest[: match.start()] + match.group(1)[:7] + rest[match.end() :]
            value = head + sep + rest
    return parse_instant(value, field=field, zone=None)


class FieldMapping(AdapterConfig):
    """Where one ``decoded_payload`` key goes: ``{"entity_type": ..., "property": ..., "unit": ...}``."""

    entity_type: TargetType
    property: str
    unit: str | None = None
    """UN/CEFACT code of the decoder's unit; ``None`` means the schema's unit."""
    voltage_range: tuple[float, float] | None = None
    """For ``Device.batteryLevel`` in volts (``VLT``): [empty, full], scaled linearly to 0..1."""


class DeviceProfile(AdapterConfig):
    """How one family of decoders writes its ``decoded_payload``."""

    fields: dict[str, FieldMapping]
    ignore: tuple[str, ...] = ()
    """Keys known and deliberately not carried over (noted in ``removed_fields`` of the Device)."""
    unknown_fields: Literal["reject", "ignore"] = "reject"
    """A key neither mapped nor ignored: quarantine the uplink (default), or note it and go on."""
    noise_period_s: int | None = Field(default=None, gt=0, le=86400)
    """Window of the noise levels when the payload does not say (the uplink closes the window)."""


class DeviceSettings(AdapterConfig):
    """What the configuration knows about one end device (keyed by its ``device_id``)."""

    profile: str = "default"
    entity_name: str | None = None
    """Local id of its entities (default: the TTS ``device_id``)."""
    location: tuple[float, float] | None = None
    """[longitude, latitude]; wins over ``uplink_message.locations.user``."""

    @field_validator("location")
    @classmethod
    def _check_location(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            geo_point(value[0], value[1], where="location")
        return value

    @field_validator("entity_name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not LOCAL_ID.fullmatch(value):
            raise ValueError("entity_name must be letters, digits, '.', '_' or '-' (at most 100)")
        return value


def _m(entity_type: TargetType, prop: str, unit: str | None = None) -> FieldMapping:
    return FieldMapping(entity_type=entity_type, property=prop, unit=unit)


#: The shipped profile for the usual decoders of air-quality, weather and noise sensors.
#: Temperature, humidity and pressure are weather conditions: they go to WeatherObserved, never
#: guessed into the AirQualityObserved of the same device. Battery voltage has no level without the
#: cell's curve, so it is ignored (noted) until a profile gives ``voltage_range``.
DEFAULT_PROFILE = DeviceProfile(
    fields={
        "pm2_5": _m("AirQualityObserved", "pm25", "GQ"),
        "pm25": _m("AirQualityObserved", "pm25", "GQ"),
        "pm10": _m("AirQualityObserved", "pm10", "GQ"),
        "pm1": _m("AirQualityObserved", "pm1", "GQ"),
        "pm1_0": _m("AirQualityObserved", "pm1", "GQ"),
        "no2": _m("AirQualityObserved", "no2", "GQ"),
        "o3": _m("AirQualityObserved", "o3", "GQ"),
        "temperature": _m("WeatherObserved", "temperature", "CEL"),
        "humidity": _m("WeatherObserved", "relativeHumidity", "P1"),
        "pressure": _m("WeatherObserved", "atmosphericPressure", "A97"),
        "laeq": _m("NoiseLevelObserved", "LAeq", "2N"),
        "LAeq": _m("NoiseLevelObserved", "LAeq", "2N"),
        "lamax": _m("NoiseLevelObserved", "LAmax", "2N"),
        "LAmax": _m("NoiseLevelObserved", "LAmax", "2N"),
        "period_s": _m("NoiseLevelObserved", OBSERVATION_PERIOD, "SEC"),
        "battery": _m("Device", "batteryLevel", "P1"),
        "battery_pct": _m("Device", "batteryLevel", "P1"),
    },
    ignore=("battery_v", "battery_voltage", "batV", "BatV", "vbat"),
)


class TtnV3Config(AdapterConfig):
    """Device profiles and per-device settings. Everything is optional: the default profile applies."""

    profiles: dict[str, DeviceProfile] = Field(default_factory=dict)
    """Named profiles; ``default`` replaces the shipped default profile."""
    devices: dict[str, DeviceSettings] = Field(default_factory=dict)
    applications: tuple[str, ...] = ()
    """If set, uplinks of other applications are refused (``unknown_application``)."""
    unknown_devices: Literal["default_profile", "reject"] = "default_profile"

    @model_validator(mode="after")
    def _check_profiles(self) -> TtnV3Config:
        profiles = self.all_profiles()
        for name, profile in profiles.items():
            compile_profile(profile, name)
        for device_id, settings in self.devices.items():
            if settings.profile not in profiles:
                raise ValueError(f"device {device_id!r} uses unknown profile {settings.profile!r}")
        return self

    def all_profiles(self) -> dict[str, DeviceProfile]:
        return {"default": DEFAULT_PROFILE, **self.profiles}


@dataclass(frozen=True, slots=True)
class _Target:
    """A compiled field mapping."""

    entity_type: str
    prop: str
    rule: MeasureRule | None = None
    period_factor: int = 0
    voltage_range: tuple[float, float] | None = None
    converted: dict[tuple[float | int, type], float | int] = dataclass_field(
        default_factory=dict, compare=False, repr=False
    )
    """(value, its type) → ``rule.apply`` of it (of a battery in volts: its level), for values already seen
    (not zero: 0.0 and -0.0 are one key)."""

    def measure(self, value: float | int, kind: type, name: str) -> float | int:
        """``rule.apply`` of a reading, remembered (raises as the rule does)."""
        seen = self.converted
        converted = seen.get((value, kind)) if value else None
        if converted is None:
            assert self.rule is not None
            converted = self.rule.apply(value, field=name)
            self.remember(value, kind, converted)
        return converted

    def remember(self, value: float | int, kind: type, converted: float | int) -> None:
        """Keep what a reading converts to (not for zero; the table is emptied when full)."""
        if value:
            seen = self.converted
            if len(seen) >= CONVERTED_KEPT:
                seen.clear()
            seen[(value, kind)] = converted


@dataclass(frozen=True, slots=True)
class _Profile:
    name: str
    targets: Mapping[str, _Target]
    ignore: frozenset[str]
    unknown_fields: str
    noise_period_s: int | None
    fields: Mapping[str, str]
    """The name of each mapped key in messages (``uplink_message.decoded_payload.<key>``), written once."""


def _payload_field(key: str) -> str:
    return f"uplink_message.decoded_payload.{str(key)[:40]}"


def compile_profile(profile: DeviceProfile, name: str) -> _Profile:
    """Check every mapping of a profile once; ``ValueError`` names the profile and the key."""
    targets: dict[str, _Target] = {}
    for key, fm in profile.fields.items():
        where = f"profile {name!r}, key {key!r}"
        if key in profile.ignore:
            raise ValueError(f"{where} is both mapped and ignored")
        targets[key] = _target(fm, where)
    fields = {key: _payload_field(key) for key in targets}
    return _Profile(name, targets, frozenset(profile.ignore), profile.unknown_fields, profile.noise_period_s, fields)


def _target(fm: FieldMapping, where: str) -> _Target:
    if fm.entity_type == "Device":
        if fm.property != "batteryLevel":
            raise ValueError(f"{where}: the only Device property taken from payloads is batteryLevel")
        if fm.unit == "VLT":
            low_high = fm.voltage_range
            if low_high is None or not 0 <= low_high[0] < low_high[1]:
                raise ValueError(f"{where}: a battery in volts needs voltage_range [empty, full], empty < full")
            return _Target("Device", "batteryLevel", voltage_range=low_high)
        if fm.unit not in (None, "P1", "C62"):
            raise ValueError(f"{where}: batteryLevel unit must be P1 (percent), C62 (0..1) or VLT")
        rule = MeasureRule("Device", "batteryLevel", _BATTERY, fm.unit or "C62", None)
        if fm.unit == "P1":
            rule = MeasureRule("Device", "batteryLevel", _BATTERY, "P1", lambda v: v / 100)
        return _Target("Device", "batteryLevel", rule=rule)
    if fm.voltage_range is not None:
        raise ValueError(f"{where}: voltage_range applies only to Device.batteryLevel")
    if fm.property == OBSERVATION_PERIOD:
        if fm.entity_type != "NoiseLevelObserved":
            raise ValueError(f"{where}: {OBSERVATION_PERIOD} applies only to NoiseLevelObserved")
        factor = _PERIOD_UNITS.get(fm.unit or "SEC")
        if factor is None:
            raise ValueError(f"{where}: {OBSERVATION_PERIOD} unit must be SEC or MIN")
        return _Target(fm.entity_type, OBSERVATION_PERIOD, period_factor=factor)
    try:
        rule = measure_rule(fm.entity_type, fm.property, fm.unit)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return _Target(fm.entity_type, fm.property, rule=rule)


@dataclass(slots=True)
class _Uplink:
    """The parts of an uplink the mapping needs, already checked."""

    app_id: str
    device_id: str
    received_at: datetime
    observed_at: datetime
    decoded: dict[str, Any]
    rx_metadata: list[Any]
    location_user: Any
    last_battery: Any


#: Converted readings kept per mapped key (emptied when full).
CONVERTED_KEPT = 4096
#: Devices (never people: LoRaWAN sensors of air, weather and noise) and payload shapes the fast path
#: has resolved, kept per adapter (each table emptied when full).
DEVICES_KEPT = 4096
SHAPES_KEPT = 1024
#: A payload with more keys than this is not the usual one (its shape is not remembered).
USUAL_MAX_KEYS = 64


@dataclass(frozen=True, slots=True)
class _Device:
    """What the fast path needs of one known, valid device id: resolved once."""

    profile: _Profile
    location: tuple[float, float] | None
    urns: Mapping[str, str]
    """The id of each of its entities, by type (``Device`` included)."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """The keys of one ``decoded_payload`` shape under one profile, in their order, resolved once."""

    mapped: tuple[tuple[str, _Target, str], ...]
    """(key, its target, its field name) of every mapped key."""
    removed: tuple[str, ...]
    """The ``removed_fields`` note of the Device (ignored keys, and unknown ones a profile ignores)."""
    controlled: tuple[str, ...]
    """``controlledProperty`` of the Device when every mapped key has a value."""


def _shape(profile: _Profile, keys: tuple[str, ...]) -> _Shape | None:
    """The shape of a payload with these keys, or None when a key is unknown and the profile refuses it."""
    mapped: list[tuple[str, _Target, str]] = []
    removed: list[str] = []
    controlled: set[str] = set()
    for key in keys:
        target = profile.targets.get(key)
        if target is None:
            if key in profile.ignore or profile.unknown_fields == "ignore":
                removed.append(_payload_field(key))
                continue
            return None
        mapped.append((key, target, profile.fields[key]))
        if target.rule is not None and target.entity_type != "Device":
            controlled.add(_controlled(target.entity_type, target.prop))
    return _Shape(tuple(mapped), tuple(removed), tuple(sorted(controlled)))


def _usual_instant(value: Any) -> tuple[datetime, str] | None:
    """A ``...Z`` time of a year from 1000 on as an aware UTC datetime and as :func:`utc_iso` writes it."""
    if value.__class__ is not str or value[:1] == "0" or not UTC_TEXT.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value)  # (as parse_instant reads it; nanoseconds are cut)
    except ValueError:
        return None
    fraction = moment.microsecond
    if fraction:
        return moment, f"{value[:19]}.{fraction // 1000:03d}Z"
    return moment, f"{value[:19]}Z"


#: The settings of a device the configuration does not list (built once: the model is frozen).
_UNCONFIGURED = DeviceSettings()


class TtnV3Adapter(Adapter):
    """The Things Stack v3 uplinks → AirQualityObserved / NoiseLevelObserved / WeatherObserved + Device."""

    name = "ttn-v3"
    version = "1.0.0"
    module = "monitoring"
    source_format = "The Things Stack v3 application uplink JSON (end_device_ids, uplink_message.decoded_payload)"
    target_types = (*OBSERVED_TYPES, "Device")
    transport = "mqtt"
    config_model = TtnV3Config
    requires_config = False

    def __init__(self, config: AdapterConfig | None = None, *, config_ref: str | None = None) -> None:
        super().__init__(config, config_ref=config_ref)
        assert isinstance(self.config, TtnV3Config)
        try:
            self._profiles = {n: compile_profile(p, n) for n, p in self.config.all_profiles().items()}
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        self._settings = self.config
        self._devices: dict[str, _Device] = {}
        self._shapes: dict[tuple[str, tuple[str, ...]], _Shape] = {}

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        doc = decode_json_object(message.payload)
        usual = self._usual(doc)
        if usual is not None:
            return usual
        return self._general(doc)

    def parse_general(self, message: RawMessage) -> list[ParsedEntity]:
        """Any uplink: its entities, or the first problem found (the usual uplink is :meth:`_usual`'s)."""
        return self._general(decode_json_object(message.payload))

    def _general(self, doc: dict[str, Any]) -> list[ParsedEntity]:
        uplink = self._uplink(doc)
        config = self.config
        assert isinstance(config, TtnV3Config)
        if config.applications and uplink.app_id not in config.applications:
            raise InvalidRecordError(
                "unknown_application",
                f"application {uplink.app_id!r} is not one of the configured applications",
                field="end_device_ids.application_ids.application_id",
            )
        settings = config.devices.get(uplink.device_id)
        if settings is None and config.unknown_devices == "reject":
            raise InvalidRecordError(
                "unknown_device",
                f"device {uplink.device_id!r} is not in the configuration",
                field="end_device_ids.device_id",
            )
        settings = settings or _UNCONFIGURED
        return self._map(uplink, settings, self._profiles[settings.profile])

    # -- the usual uplink -------------------------------------------------------------------------

    def _usual(self, doc: dict[str, Any]) -> list[ParsedEntity] | None:
        """The usual uplink (a known device, a payload shape its profile maps, numbers in range, ``...Z``
        times) mapped in one pass, exactly as the general path maps it; None for anything else (the
        general path then maps it, or says why not)."""
        up = doc.get("uplink_message")
        ids = doc.get("end_device_ids")
        if up.__class__ is not dict or ids.__class__ is not dict or "name" in doc:
            return None
        device_id = ids.get("device_id")
        apps = ids.get("application_ids")
        if device_id.__class__ is not str or apps.__class__ is not dict:
            return None
        app_id = apps.get("application_id")
        if app_id.__class__ is not str or not app_id.strip():
            return None
        config = self._settings
        if config.applications and app_id not in config.applications:
            return None
        device = self._devices.get(device_id)
        if device is None:
            device = self._device(device_id)
            if device is None:
                return None
        received = _usual_instant(doc.get("received_at"))
        if received is None:
            return None
        heard = up.get("received_at")
        observed = received if heard is None else _usual_instant(heard)
        if observed is None:
            return None
        f_port = up.get("f_port", 0)
        decoded = up.get("decoded_payload")
        rx = up.get("rx_metadata", [])
        if (
            f_port.__class__ is not int
            or f_port == 0
            or decoded.__class__ is not dict
            or not decoded
            or len(decoded) > USUAL_MAX_KEYS
            or rx.__class__ is not list
        ):
            return None
        profile = device.profile
        shape_key = (profile.name, tuple(decoded))
        shape = self._shapes.get(shape_key)
        if shape is None:
            shape = _shape(profile, shape_key[1])
            if shape is None:
                return None
            if len(self._shapes) >= SHAPES_KEPT:
                self._shapes.clear()
            self._shapes[shape_key] = shape

        by_type: dict[str, dict[str, float | int]] = {}
        period_s: float | None = None
        battery: float | int | None = None
        complete = True
        for key, target, name in shape.mapped:
            value = decoded[key]
            if value is None:
                complete = False
                continue
            kind = value.__class__
            if kind is not float and kind is not int:
                return None
            if target.period_factor:
                if not 0 < value <= 86400 / target.period_factor:
                    return None
                period_s = value * target.period_factor
                by_type.setdefault(target.entity_type, {})
            elif target.voltage_range is not None:
                # (of a battery in volts: its level, kept in the target's table by the fast path only)
                battery = target.converted.get((value, kind)) if value else None
                if battery is None:
                    if not 0 <= value <= target.voltage_range[1] * 1.5:
                        return None
                    battery = _battery_from_volts(value, target.voltage_range, name)
                    target.remember(value, kind, battery)
            else:
                try:
                    converted = target.measure(value, kind, name)
                except (InvalidRecordError, ArithmeticError):
                    return None
                if target.entity_type == "Device":
                    battery = converted
                    continue
                values = by_type.get(target.entity_type)
                if values is None:
                    values = by_type[target.entity_type] = {}
                prop = target.prop
                if prop in values and values[prop] != converted:
                    return None
                values[prop] = converted
        if battery is None:
            battery = _network_battery(up.get("last_battery_percentage"))

        location: dict[str, Any] | None = None
        if device.location is not None:
            location = {"type": "Point", "coordinates": [device.location[0], device.location[1]]}
        else:
            locations = up.get("locations")
            user = locations.get("user") if locations.__class__ is dict else None
            if user is not None:
                if user.__class__ is not dict:
                    return None
                lat: Any = user.get("latitude")
                lon: Any = user.get("longitude")
                lat_kind, lon_kind = lat.__class__, lon.__class__
                if (
                    (lat_kind is not float and lat_kind is not int)
                    or (lon_kind is not float and lon_kind is not int)
                    or not (-180 <= lon <= 180 and -90 <= lat <= 90)
                ):
                    return None
                location = {"type": "Point", "coordinates": [lon, lat]}

        best: float | int | None = None
        for gateway in rx:
            if gateway.__class__ is not dict:
                return None
            rssi = gateway.get("rssi", gateway.get("channel_rssi"))
            if rssi is None:
                continue
            rssi_kind = rssi.__class__
            if (rssi_kind is not int and rssi_kind is not float) or not -200 <= rssi <= 20:
                return None
            best = rssi if best is None else max(best, rssi)

        observed_at, observed_text = observed
        entities: list[ParsedEntity] = []
        for entity_type in OBSERVED_TYPES:
            values = by_type.get(entity_type)
            if values is None:
                continue
            if not values or location is None:
                return None
            data: dict[str, Any] = {"id": device.urns[entity_type], "type": entity_type}
            if entity_type == "NoiseLevelObserved":
                window = period_s if period_s is not None else profile.noise_period_s
                if window is None:
                    return None
                begin = utc_iso(observed_at - timedelta(seconds=window))
                data["dateObservedFrom"] = begin
                data["dateObservedTo"] = observed_text
                data["dateObserved"] = f"{begin}/{observed_text}"
            else:
                data["dateObserved"] = observed_text
            data["location"] = location
            data.update(values)
            data["refDevice"] = device.urns["Device"]
            entities.append(ParsedEntity(data))
        if complete:
            controlled = list(shape.controlled)
        else:
            controlled = sorted({_controlled(t, prop) for t, values in by_type.items() for prop in values})
        device_data: dict[str, Any] = {
            "id": device.urns["Device"],
            "type": "Device",
            "deviceCategory": ["sensor"],
            "supportedProtocol": ["lora"],
            "controlledProperty": controlled,
            "dateObserved": observed_text,
            "dateLastValueReported": received[1],
        }
        if location is not None:
            device_data["location"] = location
        if battery is not None:
            device_data["batteryLevel"] = battery
        if best is not None:
            device_data["rssi"] = best
        entities.append(ParsedEntity(device_data, removed_fields=shape.removed))
        return entities

    def _device(self, device_id: str) -> _Device | None:
        """A valid device id the configuration accepts, resolved and remembered; None for any other."""
        if not LOCAL_ID.fullmatch(device_id):
            return None
        config = self._settings
        settings = config.devices.get(device_id)
        if settings is None:
            if config.unknown_devices == "reject":
                return None
            settings = _UNCONFIGURED
        local = settings.entity_name or device_id
        urns = {entity_type: entity_urn(entity_type, local) for entity_type in (*OBSERVED_TYPES, "Device")}
        device = _Device(self._profiles[settings.profile], settings.location, urns)
        if len(self._devices) >= DEVICES_KEPT:
            self._devices.clear()
        self._devices[device_id] = device
        return device

    # -- envelope ---------------------------------------------------------------------------------

    @staticmethod
    def _uplink(doc: dict[str, Any]) -> _Uplink:
        if len(doc) == 1 and "result" in doc and isinstance(doc["result"], dict):
            doc = doc["result"]  # Storage Integration API
        if "name" in doc and isinstance(doc.get("data"), dict):  # Events API: {"name": ..., "data": {...}}
            if doc["name"] != "as.up.data.forward":
                raise InvalidRecordError(
                    "not_an_uplink", f"event '{str(doc['name'])[:60]}' is not an uplink (as.up.data.forward)"
                )
            doc = doc["data"]
        if "uplink_message" not in doc:
            kind = next((k for k in OTHER_EVENTS if k in doc), None)
            if kind is not None:
                raise InvalidRecordError("not_an_uplink", f"this is a {kind} message, not an uplink", field=kind)
            keys = ", ".join(sorted(str(k)[:30] for k in doc)[:12]) or "none"
            raise InvalidRecordError(
                "not_an_uplink", f"no uplink_message in the message (top-level keys: {keys})", field="uplink_message"
            )
        ids = obj_field(doc, "end_device_ids")
        device_id = string(ids, "device_id", path="end_device_ids.")
        apps = obj_field(ids, "application_ids", path="end_device_ids.")
        app_id = string(apps, "application_id", path="end_device_ids.application_ids.")
        assert device_id is not None and app_id is not None
        if not LOCAL_ID.fullmatch(device_id):
            raise InvalidRecordError(
                "invalid_id",
                f"device_id {describe(device_id)} is not a TTS device id",
                field="end_device_ids.device_id",
            )
        if "received_at" not in doc:
            raise InvalidRecordError("missing_field", "required field 'received_at' is missing", field="received_at")
        received_at = parse_rfc3339(doc["received_at"], field="received_at")
        up = obj_field(doc, "uplink_message")
        f_port = up.get("f_port", 0)  # TTS omits zero values: no f_port is port 0
        if isinstance(f_port, bool) or not isinstance(f_port, int):
            raise InvalidRecordError(
                "wrong_type", f"uplink_message.f_port must be an integer, got {describe(f_port)}", field="f_port"
            )
        if f_port == 0:
            raise InvalidRecordError(
                "not_an_uplink",
                "uplink on f_port 0 carries only MAC commands, no application data",
                field="uplink_message.f_port",
            )
        decoded = up.get("decoded_payload")
        if decoded is None:
            raise InvalidRecordError(
                "no_decoded_payload",
                f"uplink on f_port {f_port} has no decoded_payload: no payload formatter decoded it "
                "(set one up in The Things Stack for this device or application)",
                field="uplink_message.decoded_payload",
            )
        if not isinstance(decoded, dict):
            raise InvalidRecordError(
                "wrong_type",
                f"uplink_message.decoded_payload must be an object, got {describe(decoded)}",
                field="uplink_message.decoded_payload",
            )
        if not decoded:
            raise InvalidRecordError(
                "no_decoded_payload", "uplink_message.decoded_payload is empty", field="uplink_message.decoded_payload"
            )
        observed_at = received_at
        if up.get("received_at") is not None:
            observed_at = parse_rfc3339(up["received_at"], field="uplink_message.received_at")
        rx = up.get("rx_metadata", [])
        if not isinstance(rx, list):
            raise InvalidRecordError(
                "wrong_type", "uplink_message.rx_metadata must be an array", field="uplink_message.rx_metadata"
            )
        locations = up.get("locations")
        user = locations.get("user") if isinstance(locations, dict) else None
        return _Uplink(
            app_id, device_id, received_at, observed_at, decoded, rx, user, up.get("last_battery_percentage")
        )

    # -- mapping ----------------------------------------------------------------------------------

    def _map(self, uplink: _Uplink, settings: DeviceSettings, profile: _Profile) -> list[ParsedEntity]:
        by_type: dict[str, dict[str, float | int]] = {}
        period_s: float | None = None
        battery: float | int | None = None
        removed: list[str] = []
        targets = profile.targets
        fields = profile.fields
        for key, value in uplink.decoded.items():
            target = targets.get(key)
            if target is None:
                name = _payload_field(key)
                if key in profile.ignore or profile.unknown_fields == "ignore":
                    removed.append(name)
                    continue
                known = ", ".join(sorted(profile.targets))
                raise InvalidRecordError(
                    "unknown_attribute",
                    f"decoded_payload key '{str(key)[:40]}' is not mapped by profile {profile.name!r} "
                    f"(mapped: {known}); map it or list it under 'ignore'",
                    field=name,
                )
            if value is None:  # the decoder says the reading is absent
                continue
            name = fields[key]
            kind = value.__class__
            if (kind is not float and kind is not int) and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise InvalidRecordError(
                    "wrong_type", f"field '{name}' must be a number, got {describe(value)}", field=name
                )
            if target.period_factor:
                if value <= 0 or value > 86400 / target.period_factor:
                    raise InvalidRecordError(
                        "out_of_range", f"field '{name}' is {value!r}, not a window length in (0, 1 day]", field=name
                    )
                period_s = value * target.period_factor
                by_type.setdefault(target.entity_type, {})
            elif target.voltage_range is not None:
                battery = _battery_from_volts(value, target.voltage_range, name)
            else:
                converted = target.measure(value, kind, name)
                if target.entity_type == "Device":
                    battery = converted
                    continue
                values = by_type.setdefault(target.entity_type, {})
                if target.prop in values and values[target.prop] != converted:
                    raise InvalidRecordError(
                        "conflicting_values",
                        f"two decoded_payload keys give {target.entity_type}.{target.prop} different values",
                        field=name,
                    )
                values[target.prop] = converted
        if battery is None:
            battery = _network_battery(uplink.last_battery)
        location = self._location(uplink, settings)
        local = settings.entity_name or uplink.device_id
        device_id = device_urn(local)
        entities: list[ParsedEntity] = []
        controlled: set[str] = set()
        for entity_type in OBSERVED_TYPES:
            if entity_type not in by_type:
                continue
            values = by_type[entity_type]
            if not values:
                raise InvalidRecordError(
                    "missing_field",
                    f"the uplink gives a noise window but no {entity_type} level",
                    field="uplink_message.decoded_payload",
                )
            if location is None:
                raise InvalidRecordError(
                    "missing_location",
                    f"no location for device {uplink.device_id!r}: neither uplink_message.locations.user "
                    "nor the configuration gives one",
                    field="uplink_message.locations.user",
                )
            data: dict[str, Any] = {"id": entity_urn(entity_type, local), "type": entity_type}
            if entity_type == "NoiseLevelObserved":
                window = period_s if period_s is not None else profile.noise_period_s
                if window is None:
                    raise InvalidRecordError(
                        "missing_field",
                        "noise levels without a window: the payload has no period key and the profile "
                        f"{profile.name!r} sets no noise_period_s",
                        field="uplink_message.decoded_payload",
                    )
                data.update(observation_period(uplink.observed_at - timedelta(seconds=window), uplink.observed_at))
            else:
                data["dateObserved"] = utc_iso(uplink.observed_at)
            data["location"] = location
            data.update(values)
            data["refDevice"] = device_id
            entities.append(ParsedEntity(data))
            for prop in values:
                controlled.add(_controlled(entity_type, prop))
        device: dict[str, Any] = {
            "id": device_id,
            "type": "Device",
            "deviceCategory": ["sensor"],
            "supportedProtocol": ["lora"],
            "controlledProperty": sorted(controlled),
            "dateObserved": utc_iso(uplink.observed_at),
            "dateLastValueReported": utc_iso(uplink.received_at),
        }
        if location is not None:
            device["location"] = location
        if battery is not None:
            device["batteryLevel"] = battery
        rssi = _best_rssi(uplink.rx_metadata)
        if rssi is not None:
            device["rssi"] = rssi
        entities.append(ParsedEntity(device, removed_fields=tuple(removed)))
        return entities

    @staticmethod
    def _location(uplink: _Uplink, settings: DeviceSettings) -> dict[str, Any] | None:
        if settings.location is not None:
            return geo_point(settings.location[0], settings.location[1], where="location")
        user = uplink.location_user
        if user is None:
            return None
        field = "uplink_message.locations.user"
        if not isinstance(user, dict):
            raise InvalidRecordError("wrong_type", f"{field} must be an object", field=field)
        lat, lon = user.get("latitude"), user.get("longitude")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
            raise InvalidRecordError("wrong_type", f"{field} needs numeric latitude and longitude", field=field)
        assert isinstance(lat, int | float) and isinstance(lon, int | float)
        try:
            return geo_point(lon, lat, where=field)
        except ValueError as exc:
            raise InvalidRecordError("out_of_range", str(exc), field=field) from None


def _controlled(entity_type: str, prop: str) -> str:
    return QUANTITIES[entity_type][prop].controlled


def _battery_from_volts(volts: float | int, low_high: tuple[float, float], name: str) -> float:
    low, high = low_high
    if not 0 <= volts <= high * 1.5:
        raise InvalidRecordError(
            "out_of_range", f"field '{name}' is {volts!r} V, implausible for a {high} V battery", field=name
        )
    return round(min(max((volts - low) / (high - low), 0.0), 1.0), 3)


def _network_battery(last: Any) -> float | None:
    """``last_battery_percentage`` (0..100) that the network server measured, as a fraction."""
    if not isinstance(last, dict):
        return None
    value = last.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        return None
    return round(value / 100, 6)


def _best_rssi(rx_metadata: list[Any]) -> float | int | None:
    """The strongest signal among the gateways that heard the uplink (dBm)."""
    best: float | int | None = None
    for index, gateway in enumerate(rx_metadata):
        if not isinstance(gateway, dict):
            raise InvalidRecordError(
                "wrong_type", f"uplink_message.rx_metadata[{index}] must be an object", field="rx_metadata"
            )
        rssi = gateway.get("rssi", gateway.get("channel_rssi"))
        if rssi is None:
            continue
        if isinstance(rssi, bool) or not isinstance(rssi, int | float) or not -200 <= rssi <= 20:
            raise InvalidRecordError(
                "wrong_type",
                f"uplink_message.rx_metadata[{index}].rssi must be a number of dBm, got {describe(rssi)}",
                field="rx_metadata.rssi",
            )
        best = rssi if best is None else max(best, rssi)
    return best
