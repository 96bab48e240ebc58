"""Monitoring quantities, units and their conversions, shared by the monitoring adapters.

One table (``QUANTITIES``) says which properties each observed entity type carries, in which
UN/CEFACT unit the schema wants them and what range is physically plausible; ``measure_rule``
turns a configured source unit into a checked conversion, or refuses the configuration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from adapters.fields import describe
from governance.errors import InvalidRecordError
from governance.ingest.message import entity_urn
from governance.ingest.timeparse import utc_iso

# --------------------------------------------------------------------------------------------------
# Monitoring quantities and units (shared by the monitoring adapters)
# --------------------------------------------------------------------------------------------------

ObservedType = Literal["AirQualityObserved", "NoiseLevelObserved", "WeatherObserved"]
OBSERVED_TYPES: tuple[str, ...] = ("AirQualityObserved", "NoiseLevelObserved", "WeatherObserved")


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured property of a standard type: its unit in the schema and its plausible range."""

    unit: str
    """UN/CEFACT code of the unit the official model uses for this property."""
    minimum: float
    maximum: float
    controlled: str
    """The ``Device.controlledProperty`` value for a device that measures it."""


def _q(unit: str, minimum: float, maximum: float, controlled: str) -> Quantity:
    return Quantity(unit, minimum, maximum, controlled)


_TEMPERATURE = _q("CEL", -90, 70, "temperature")
_HUMIDITY = _q("C62", 0, 1, "humidity")  # the official models use a fraction 0..1, not percent
_PRESSURE = _q("A97", 300, 1100, "atmosphericPressure")  # hPa
_WIND_SPEED = _q("MTS", 0, 120, "windSpeed")
_PRECIPITATION = _q("MMT", 0, 2000, "precipitation")  # mm = litres per square metre
_PARTICLES = _q("GQ", 0, 10_000, "airPollution")  # µg/m³
_GAS = _q("GQ", 0, 100_000, "airPollution")
_NOISE = _q("2N", 0, 200, "noiseLevel")  # dB(A)

#: What each observed type can carry as a measured number, in the unit of the official model.
QUANTITIES: Mapping[str, Mapping[str, Quantity]] = {
    "AirQualityObserved": {
        "pm1": _PARTICLES,
        "pm25": _PARTICLES,
        "pm4": _PARTICLES,
        "pm10": _PARTICLES,
        "no": _GAS,
        "no2": _GAS,
        "nox": _GAS,
        "o3": _GAS,
        "so2": _GAS,
        "c6h6": _GAS,
        "sh2": _GAS,
        "co": _q("GP", 0, 1000, "airPollution"),  # mg/m³, as in the official example
        "temperature": _TEMPERATURE,
        "relativeHumidity": _HUMIDITY,
        "pressure": _PRESSURE,
        "windSpeed": _WIND_SPEED,
        "windDirection": _q("DD", -180, 180, "windDirection"),  # this model uses -180..180
        "precipitation": _PRECIPITATION,
    },
    "NoiseLevelObserved": {
        "LAeq": _NOISE,
        "LAmax": _NOISE,
        "LAS": _NOISE,
        "LAeq_d": _NOISE,
    },
    "WeatherObserved": {
        "temperature": _TEMPERATURE,
        "feelsLikeTemperature": _TEMPERATURE,
        "dewPoint": _TEMPERATURE,
        "relativeHumidity": _HUMIDITY,
        "atmosphericPressure": _PRESSURE,
        "windSpeed": _WIND_SPEED,
        "gustSpeed": _WIND_SPEED,
        "windDirection": _q("DD", 0, 360, "windDirection"),
        "precipitation": _PRECIPITATION,
        "illuminance": _q("LUX", 0, 200_000, "light"),
        "solarRadiation": _q("D54", 0, 2000, "solarRadiation"),  # W/m²
        "snowHeight": _q("CMT", 0, 5000, "depth"),
    },
}

#: (from, to) → conversion. Only exact, physical conversions: ppm/ppb ↔ µg/m³ depends on the gas,
#: temperature and pressure, so it is refused rather than assumed.
CONVERSIONS: Mapping[tuple[str, str], Callable[[float], float]] = {
    ("FAH", "CEL"): lambda v: (v - 32) * 5 / 9,
    ("KEL", "CEL"): lambda v: v - 273.15,
    ("P1", "C62"): lambda v: v / 100,
    ("PAL", "A97"): lambda v: v / 100,
    ("KPA", "A97"): lambda v: v * 10,
    ("MBR", "A97"): lambda v: v,  # millibar = hectopascal
    ("KMH", "MTS"): lambda v: v / 3.6,
    ("KNT", "MTS"): lambda v: v * 1852 / 3600,
    ("HM", "MTS"): lambda v: v * 0.44704,  # mile per hour
    ("GP", "GQ"): lambda v: v * 1000,
    ("GQ", "GP"): lambda v: v / 1000,
    ("INH", "MMT"): lambda v: v * 25.4,
    ("MMT", "CMT"): lambda v: v / 10,
}

#: Converted values are rounded to this many decimals: far below any sensor's resolution, but it
#: removes binary floating-point noise (55.3 / 100 → 0.553, not 0.5529999999999999).
CONVERTED_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class MeasureRule:
    """How one input value becomes one property: the quantity, and the conversion from the input unit."""

    entity_type: str
    prop: str
    quantity: Quantity
    source_unit: str
    convert: Callable[[float], float] | None
    """``None`` when the input is already in the schema's unit."""

    def apply(self, value: float | int, *, field: str) -> float | int:
        """The value in the schema's unit, or ``out_of_range`` naming the field and both units."""
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRecordError("out_of_range", f"field '{field}' is not a finite number", field=field)
        out: float | int = value
        if self.convert is not None:
            out = round(self.convert(value), CONVERTED_DECIMALS)
        q = self.quantity
        if not q.minimum <= out <= q.maximum:
            shown = f"{value!r} {self.source_unit}"
            if self.convert is not None:
                shown += f" (= {out!r} {q.unit})"
            raise InvalidRecordError(
                "out_of_range",
                f"field '{field}' is {shown}, outside the plausible range [{q.minimum}, {q.maximum}] "
                f"{q.unit} for {self.entity_type}.{self.prop}",
                field=field,
            )
        return out


def measure_rule(entity_type: str, prop: str, unit: str | None) -> MeasureRule:
    """The rule for ``prop`` of ``entity_type`` given in ``unit`` (``None``: the schema's unit).

    Raises ``ValueError`` (a configuration problem) for a property the type does not have or a unit
    that cannot be converted exactly.
    """
    props = QUANTITIES.get(entity_type)
    if props is None:
        raise ValueError(f"entity type {entity_type!r} is not one of {', '.join(OBSERVED_TYPES)}")
    quantity = props.get(prop)
    if quantity is None:
        raise ValueError(f"{entity_type} has no measured property {prop!r} (known: {', '.join(sorted(props))})")
    if unit is None or unit == quantity.unit:
        return MeasureRule(entity_type, prop, quantity, quantity.unit, None)
    convert = CONVERSIONS.get((unit, quantity.unit))
    if convert is None:
        convertible = sorted(src for (src, dst) in CONVERSIONS if dst == quantity.unit)
        raise ValueError(
            f"{entity_type}.{prop} is in {quantity.unit}; unit {unit!r} cannot be converted to it "
            f"(accepted: {', '.join([quantity.unit, *convertible])})"
        )
    return MeasureRule(entity_type, prop, quantity, unit, convert)


_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")
_MAX_NUMBER_CHARS = 40


def parse_decimal(text: str, *, field: str, decimal: str = ".") -> float | int:
    """A number written as text, strictly: no NaN, no infinities, no thousands separators, no hex.

    With ``decimal=","`` the comma is the decimal mark ("55,3"); a point is then refused, since
    "1.013,2" and "1.013" cannot be told apart from thousands separators.
    """
    known = _NUMBERS.get(decimal)
    if known is not None:
        number = known.get(text)
        if number is not None:  # the same readings come again and again ("21.4", "70", "0")
            return number
    number = _parse_decimal(text, field=field, decimal=decimal)
    if known is not None:
        if len(known) >= _NUMBERS_KEPT:
            known.clear()
        known[text] = number
    return number


#: Texts already read as numbers, per decimal mark (only valid numbers are kept).
_NUMBERS: dict[str, dict[str, float | int]] = {".": {}, ",": {}}
_NUMBERS_KEPT = 65_536


def _parse_decimal(text: str, *, field: str, decimal: str) -> float | int:
    raw = text.strip()
    if not raw:
        raise InvalidRecordError("missing_field", f"field '{field}' is empty", field=field)
    if len(raw) > _MAX_NUMBER_CHARS:
        raise InvalidRecordError("wrong_type", f"field '{field}' is not a number ({len(raw)} characters)", field=field)
    if decimal == ",":
        if "." in raw:
            raise InvalidRecordError(
                "wrong_type",
                f"field '{field}' is {raw!r}: a '.' where the decimal mark is ',' "
                "(thousands separators are not accepted)",
                field=field,
            )
        raw = raw.replace(",", ".")
    if not _DECIMAL.fullmatch(raw):
        raise InvalidRecordError("wrong_type", f"field '{field}' must be a number, got {describe(text)}", field=field)
    if "." in raw or "e" in raw or "E" in raw:
        return float(raw)
    return int(raw)


def geo_point(lon: float, lat: float, *, where: str) -> dict[str, Any]:
    """A GeoJSON Point, or ``ValueError`` when the coordinates are not a place on Earth."""
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"{where}: [{lon}, {lat}] is not [longitude, latitude] in WGS84")
    return {"type": "Point", "coordinates": [lon, lat]}


def device_urn(device_id: str) -> str:
    return entity_urn("Device", device_id)


def observation_period(start: datetime, end: datetime) -> dict[str, str]:
    """The time properties of an observation over a period (NoiseLevelObserved).

    ``dateObserved`` is the ISO 8601 interval ``from/to``, as the official model describes it.
    """
    begin, finish = utc_iso(start), utc_iso(end)
    return {"dateObservedFrom": begin, "dateObservedTo": finish, "dateObserved": f"{begin}/{finish}"}
