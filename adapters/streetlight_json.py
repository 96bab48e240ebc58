"""Lighting management system over MQTT: one JSON message per control cabinet with all its lamps.

``{"cabinet": "CAB-0042", "ts": 1763971200000, "lamps": [{"id": "L-0042-07", "state": "ON", "dim": 70,
"power_w": 38.5, "energy_wh": 123456, "fault": null}], "cabinet_kwh": 5321.7}`` becomes one
``Streetlight`` per lamp and one ``StreetlightControlCabinet``. Where lamps and cabinets stand, which
groups a cabinet switches and its working mode are not in the feed: they come from the configuration.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from adapters.base import Adapter, AdapterConfig
from adapters.fields import (
    LOCAL_ID,
    decode_json_object,
    describe,
    list_field,
    local_id,
    number,
    require,
    string,
    unknown_keys,
)
from governance.errors import InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage, entity_urn
from governance.ingest.timeparse import parse_instant, utc_iso

StreetlightStatus = Literal["ok", "defectiveLamp", "brokenLantern", "columnIssue"]
WorkingMode = Literal["automatic", "manual", "semiautomatic"]

#: Fault codes of the lighting system → official ``Streetlight.status``. ``None`` (no fault) is "ok".
#: A code missing here is quarantined (``unknown_fault``) unless the configuration maps it.
FAULT_STATUS: dict[str, StreetlightStatus] = {
    "lamp_failure": "defectiveLamp",  # the light source itself
    "lamp_end_of_life": "defectiveLamp",
    "ballast": "brokenLantern",  # control gear inside the luminaire (lantern)
    "driver": "brokenLantern",  # LED driver, inside the luminaire
    "communication": "brokenLantern",  # the lamp's controller node (in the lantern) does not answer
    "low_voltage": "columnIssue",  # supply to the column, not the luminaire
    "high_voltage": "columnIssue",
    "column_damage": "columnIssue",
}

#: With this fault the cabinet has no fresh reading of the lamp: its readings are not carried over.
NO_READINGS_FAULTS = frozenset({"communication"})

POWER_STATE: dict[str, str] = {"on": "on", "off": "off", "low": "low", "booting": "bootingUp"}

#: Plausible ceiling for one street luminaire (high-mast floodlights stay under 2 kW).
MAX_LAMP_POWER_W = 2000.0

LAMP_FIELDS = frozenset({"id", "state", "dim", "power_w", "energy_wh", "fault"})
MESSAGE_FIELDS = frozenset({"cabinet", "ts", "lamps", "cabinet_kwh"})
_READINGS = ("state", "dim", "power_w", "energy_wh")



def _point(value: tuple[float, float]) -> tuple[float, float]:
    lon, lat = value
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError("location must be [longitude, latitude] within [-180, 180] and [-90, 90]")
    return value


class CabinetSite(AdapterConfig):
    """Where a cabinet stands and what it switches."""

    location: tuple[float, float]
    """[longitude, latitude] (WGS84)."""
    groups: tuple[str, ...] = ()
    """StreetlightGroup local ids it controls; default: one group named after the cabinet."""
    working_mode: WorkingMode | None = None
    """Default: the adapter's ``default_working_mode``."""

    @field_validator("location")
    @classmethod
    def _check_location(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _point(value)

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value) or not all(LOCAL_ID.fullmatch(g) for g in value):
            raise ValueError("groups must be distinct ids of letters, digits, '_', '.' or '-'")
        return value


class LampSite(AdapterConfig):
    """Where one lamp stands (lamps not listed take their cabinet's location)."""

    location: tuple[float, float]
    group: str | None = None
    """StreetlightGroup local id; default: the cabinet's group when it controls exactly one."""

    @field_validator("location")
    @classmethod
    def _check_location(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _point(value)


class StreetlightJsonConfig(AdapterConfig):
    """Provisioning data the feed does not carry."""

    default_working_mode: WorkingMode = "automatic"
    cabinets: dict[str, CabinetSite] = Field(default_factory=dict)
    lamps: dict[str, LampSite] = Field(default_factory=dict)
    fault_status: dict[str, StreetlightStatus] = Field(default_factory=dict)
    """Extra or overriding fault codes (lower case) → Streetlight status."""


class StreetlightJsonAdapter(Adapter):
    """One cabinet message → a Streetlight per lamp plus the StreetlightControlCabinet."""

    name = "streetlight-json"
    version = "1.0.0"
    module = "lighting"
    source_format = "MQTT JSON, one object per control cabinet with a 'lamps' array (epoch ms or ISO 'ts')"
    target_types = ("Streetlight", "StreetlightControlCabinet")
    transport = "mqtt"
    config_model = StreetlightJsonConfig
    requires_config = True

    config: StreetlightJsonConfig

    def __init__(self, config: AdapterConfig | None = None, *, config_ref: str | None = None) -> None:
        super().__init__(config, config_ref=config_ref)
        self._faults: dict[str, StreetlightStatus] = {
            **FAULT_STATUS,
            **{code.lower(): status for code, status in self.config.fault_status.items()},
        }
        # Resolved once per lamp id: (Streetlight id, location, its own group's id or None).
        self._lamps: dict[str, tuple[str, tuple[float, float] | None, str | None]] = {}

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        body = decode_json_object(message.payload)
        cabinet = local_id(body, "cabinet")
        site = self.config.cabinets.get(cabinet)
        if site is None:
            raise InvalidRecordError(
                "unknown_cabinet",
                f"cabinet {cabinet!r} has no configured location; add it under 'cabinets' in the "
                "adapter configuration",
                field="cabinet",
            )
        observed = utc_iso(parse_instant(require(body, "ts"), field="ts", zone=None))
        lamps = list_field(body, "lamps")
        if not lamps:
            raise InvalidRecordError("missing_field", "field 'lamps' is an empty array", field="lamps")
        cabinet_urn = entity_urn("StreetlightControlCabinet", cabinet)
        groups = [entity_urn("StreetlightGroup", g) for g in (site.groups or (cabinet,))]
        group = groups[0] if len(groups) == 1 else None

        entities: list[ParsedEntity] = []
        seen: set[str] = set()
        lamp_fast = self._lamp_fast
        for index, raw in enumerate(lamps):
            lamp = lamp_fast(raw, observed, cabinet_urn, site.location, group) if raw.__class__ is dict else None
            if lamp is None:  # anything unusual (a fault, a missing reading, a wrong value) takes the full path
                if not isinstance(raw, dict):
                    raise InvalidRecordError(
                        "wrong_type", f"'lamps[{index}]' must be an object, got {describe(raw)}", field="lamps"
                    )
                lamp = self._lamp(
                    raw, f"lamps[{index}].", observed=observed, cabinet_urn=cabinet_urn, site=site, group=group
                )
            lamp_urn = lamp.data["id"]
            if lamp_urn in seen:
                path = f"lamps[{index}]."
                raise InvalidRecordError(
                    "duplicate_lamp",
                    f"'{path}id' repeats a lamp already in this message; one reading per lamp is expected",
                    field=f"{path}id",
                )
            seen.add(lamp_urn)
            entities.append(lamp)

        cabinet_entity: dict[str, Any] = {
            "id": cabinet_urn,
            "type": "StreetlightControlCabinet",
            "location": {"type": "Point", "coordinates": list(site.location)},
            "refStreetlightGroup": groups,
            "workingMode": site.working_mode or self.config.default_working_mode,
            # The official cabinet model has no observation-time property; the project schema takes
            # dateModified (when the cabinet's state last changed) as its observation time.
            "dateModified": observed,
        }
        kwh = number(body, "cabinet_kwh", required=False, minimum=0)
        if kwh is not None:
            cabinet_entity["energyConsumed"] = kwh
        entities.append(ParsedEntity(cabinet_entity, removed_fields=unknown_keys(body, MESSAGE_FIELDS)))
        return entities

    def _lamp_fast(
        self,
        raw: dict[str, Any],
        observed: str,
        cabinet_urn: str,
        cabinet_location: tuple[float, float],
        group: str | None,
    ) -> ParsedEntity | None:
        """:meth:`_lamp` for the usual lamp (no fault, readings of the right types in range), else None."""
        lamp_id = raw.get("id")
        if lamp_id.__class__ is not str or raw.get("fault", "") is not None:
            return None
        known = self._lamps.get(lamp_id)
        if known is None:
            if not LOCAL_ID.fullmatch(lamp_id):
                return None
            lamp_site = self.config.lamps.get(lamp_id)
            known = (
                entity_urn("Streetlight", lamp_id),
                lamp_site.location if lamp_site else None,
                entity_urn("StreetlightGroup", lamp_site.group) if lamp_site and lamp_site.group else None,
            )
            if len(self._lamps) >= LAMPS_KEPT:
                self._lamps.clear()
            self._lamps[lamp_id] = known
        urn, location, own_group = known
        state = raw.get("state")
        if state.__class__ is not str:
            return None
        power_state = _POWER_STATES.get(state)
        if power_state is None:
            power_state = POWER_STATE.get(state.strip().lower())
            if power_state is None:
                return None
            if len(_POWER_STATES) < LAMPS_KEPT:
                _POWER_STATES[state] = power_state
        entity: dict[str, Any] = {"id": urn, "type": "Streetlight", "status": "ok", "powerState": power_state}
        dim = raw.get("dim")
        if dim is not None:
            if (dim.__class__ is not int and dim.__class__ is not float) or not 0 <= dim <= 100:
                return None
            entity["illuminanceLevel"] = round(dim / 100, 9)  # as _scaled
        power = raw.get("power_w")
        if power is not None:
            if (power.__class__ is not int and power.__class__ is not float) or not 0 <= power <= MAX_LAMP_POWER_W:
                return None
            entity["powerConsumption"] = power
        energy = raw.get("energy_wh")
        if energy is not None:
            if (energy.__class__ is not int and energy.__class__ is not float) or not 0 <= energy < _INFINITY:
                return None
            entity["lifetimePowerConsumption"] = round(energy / 1000, 9)  # as _scaled
        entity["refStreetlightControlCabinet"] = cabinet_urn
        group = own_group or group
        if group:
            entity["refStreetlightGroup"] = group
        entity["location"] = {"type": "Point", "coordinates": list(location or cabinet_location)}
        entity["observationDateTime"] = observed
        if LAMP_FIELDS.issuperset(raw):
            return ParsedEntity(entity)
        return ParsedEntity(entity, removed_fields=unknown_keys(raw, LAMP_FIELDS, path="lamps[]."))

    def _lamp(
        self,
        raw: dict[str, Any],
        path: str,
        *,
        observed: str,
        cabinet_urn: str,
        site: CabinetSite,
        group: str | None,
    ) -> ParsedEntity:
        lamp_id = local_id(raw, "id", path=path)
        if "fault" not in raw:
            raise InvalidRecordError(
                "missing_field",
                f"required field '{path}fault' is missing (send null when the lamp has no fault)",
                field=f"{path}fault",
            )
        fault = string(raw, "fault", path=path, required=False)
        code = fault.strip().lower() if fault is not None else None
        if code is None:
            status: StreetlightStatus = "ok"
        elif code in self._faults:
            status = self._faults[code]
        else:
            raise InvalidRecordError(
                "unknown_fault",
                f"'{path}fault' is {describe(fault)}, not a known fault code; map it under 'fault_status' "
                "in the adapter configuration",
                field=f"{path}fault",
            )
        lamp_site = self.config.lamps.get(lamp_id)
        location = lamp_site.location if lamp_site else site.location
        if lamp_site and lamp_site.group:
            group = entity_urn("StreetlightGroup", lamp_site.group)
        entity: dict[str, Any] = {
            "id": entity_urn("Streetlight", lamp_id),
            "type": "Streetlight",
            "status": status,
        }
        removed = list(unknown_keys(raw, LAMP_FIELDS, path="lamps[]."))
        if code in NO_READINGS_FAULTS:
            removed += [f"lamps[].{key}" for key in _READINGS if raw.get(key) is not None]
        else:
            entity.update(self._readings(raw, path))
        entity["refStreetlightControlCabinet"] = cabinet_urn
        if group:
            entity["refStreetlightGroup"] = group
        entity["location"] = {"type": "Point", "coordinates": list(location)}
        entity["observationDateTime"] = observed
        return ParsedEntity(entity, removed_fields=tuple(removed))

    @staticmethod
    def _readings(raw: dict[str, Any], path: str) -> dict[str, Any]:
        state = string(raw, "state", path=path)
        assert state is not None
        power_state = POWER_STATE.get(state.strip().lower())
        if power_state is None:
            raise InvalidRecordError(
                "unknown_state",
                f"'{path}state' is {describe(state)}; expected ON, OFF, LOW or BOOTING",
                field=f"{path}state",
            )
        out: dict[str, Any] = {"powerState": power_state}
        dim = number(raw, "dim", path=path, required=False, minimum=0, maximum=100)
        if dim is not None:
            out["illuminanceLevel"] = _scaled(dim, 100)  # percent → fraction 0..1
        power = number(raw, "power_w", path=path, required=False, minimum=0, maximum=MAX_LAMP_POWER_W)
        if power is not None:
            out["powerConsumption"] = power  # W
        energy = number(raw, "energy_wh", path=path, required=False, minimum=0)
        if energy is not None:
            out["lifetimePowerConsumption"] = _scaled(energy, 1000)  # Wh → kWh
        return out


#: Lamps resolved per adapter, and spellings of power states seen (``"LOW"``), kept up to this many.
LAMPS_KEPT = 65_536
_POWER_STATES: dict[str, str] = {}
_INFINITY = math.inf


def _scaled(value: float, divisor: int) -> float:
    """``value / divisor`` without binary noise in the last digits (33.3 % → 0.333, not 0.33299…)."""
    return round(value / divisor, 9)
