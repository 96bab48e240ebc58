"""Home care hubs of seniors living alone: one JSON event per message.

``{"hub": "H-1029", "resident": "R-55812", "event": "fall_detected", "value": null, "confidence": 0.93,
"at": "2026-11-20T03:12:44+01:00"}``. Falls and SOS presses become ``Alert`` entities (category
``health``); inactivity, heart rate, door and bed sensors become ``ResidentObservation`` entities, the
project's care extension of Smart Data Models. The resident is only ever a relationship
(``refResident``), never part of an entity id.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from adapters.base import Adapter
from adapters.fields import (
    LOCAL_ID,
    decode_json_object,
    describe,
    local_id,
    number,
    require,
    string,
    unknown_keys,
)
from governance.errors import InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage, entity_urn
from governance.ingest.timeparse import parse_instant, utc_iso

MESSAGE_FIELDS = frozenset({"hub", "resident", "event", "value", "confidence", "at"})

#: Events that raise an Alert: event → (official subCategory or None, description).
ALERT_EVENTS: dict[str, tuple[str | None, str]] = {
    "fall_detected": ("fallenPatient", "Fall detected by the home care hub"),
    # The official subCategory enumeration has no SOS / call-for-help value: left out, not forced.
    "sos_button": (None, "SOS button pressed on the home care hub"),
}

#: Events that are observations: event → (observationType, unitCode, (min, max) or None if no value).
OBSERVATION_EVENTS: dict[str, tuple[str, str | None, tuple[float, float | None] | None]] = {
    "inactivity": ("inactivity", "MIN", (0, None)),  # minutes without movement
    "heart_rate": ("heartRate", "5K", (20, 250)),  # beats per minute (UN/CEFACT 5K: per minute)
    "door_open": ("doorOpen", None, None),
    "bed_exit": ("bedExit", None, None),
}


KNOWN_EVENTS = frozenset({*ALERT_EVENTS, *OBSERVATION_EVENTS})


def fall_severity(confidence: float | None) -> str:
    """Severity of a fall alert. Without a confidence the fall is taken as certain: a person may be
    on the floor, and an unweighted alarm must not be played down."""
    if confidence is None or confidence >= 0.8:
        return "critical"
    if confidence >= 0.5:
        return "high"
    return "medium"


class CareHubAdapter(Adapter):
    """One hub event → an Alert (fall, SOS) or a ResidentObservation (everything else known)."""

    name = "care-hub"
    version = "1.0.0"
    module = "care"
    source_format = "MQTT JSON, one event per message with an ISO 8601 'at' that carries its UTC offset"
    target_types = ("Alert", "ResidentObservation")
    transport = "mqtt"

    def subject_hint(self, message: RawMessage) -> str | None:
        try:
            body = decode_json_object(message.payload)
            return entity_urn("Person", local_id(body, "resident", echo=False))
        except InvalidRecordError:
            return None

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            body = None
        if body.__class__ is dict:
            usual = _usual(body)
            if usual is not None:
                return usual
        return self.parse_general(message)

    def parse_general(self, message: RawMessage) -> list[ParsedEntity]:
        """Any message: the entity, or the first problem found (the usual message is :func:`_usual`'s)."""
        body = decode_json_object(message.payload)
        removed = unknown_keys(body, MESSAGE_FIELDS)
        hub = body.get("hub")
        if not isinstance(hub, str) or LOCAL_ID.fullmatch(hub) is None:
            # (a valid hub id is not handed to local_id, which would remember it: a hub is one person's)
            hub = local_id(body, "hub")
        resident = local_id(body, "resident", echo=False)
        event = body.get("event")
        if event.__class__ is not str or event not in KNOWN_EVENTS:  # (a known event is a plain string)
            event = string(body, "event")
            assert event is not None
        if event not in ALERT_EVENTS and event not in OBSERVATION_EVENTS:
            raise InvalidRecordError(
                "unknown_event",
                f"'event' is {describe(event)}; known events are "
                + ", ".join(sorted([*ALERT_EVENTS, *OBSERVATION_EVENTS])),
                field="event",
            )
        moment = parse_instant(require(body, "at"), field="at", zone=None)  # hubs must send an offset
        confidence = number(body, "confidence", required=False, minimum=0, maximum=1)
        hub_urn = entity_urn("Device", hub)
        resident_urn = entity_urn("Person", resident)

        if event in ALERT_EVENTS:
            no_value(body, event)
            sub_category, description = ALERT_EVENTS[event]
            alert: dict[str, Any] = {
                "id": entity_urn("Alert", f"{hub}-{int(moment.timestamp())}-{event}"),
                "type": "Alert",
                "category": "health",
            }
            if sub_category is not None:
                alert["subCategory"] = sub_category
            alert.update(
                {
                    "severity": fall_severity(confidence) if event == "fall_detected" else "critical",
                    "description": description,
                    "alertSource": hub_urn,
                    "dateIssued": utc_iso(moment),
                    "refResident": resident_urn,
                }
            )
            return [ParsedEntity(alert, removed_fields=removed)]

        observation_type, unit, bounds = OBSERVATION_EVENTS[event]
        observation: dict[str, Any] = {
            "id": entity_urn("ResidentObservation", f"{hub}-{observation_type}"),
            "type": "ResidentObservation",
            "observationType": observation_type,
        }
        if bounds is None:
            no_value(body, event)
        else:
            minimum, maximum = bounds
            value = number(body, "value", minimum=minimum, maximum=maximum)
            observation["numValue"] = value
            observation["unitCode"] = unit
        if confidence is not None:
            observation["confidence"] = confidence
        observation.update(
            {"refResident": resident_urn, "refDevice": hub_urn, "dateObserved": utc_iso(moment)}
        )
        return [ParsedEntity(observation, removed_fields=removed)]


def no_value(body: dict[str, Any], event: str) -> None:
    """Events without a measurement must not carry one: a value there means the feed is not understood."""
    if body.get("value") is not None:
        raise InvalidRecordError(
            "unexpected_value",
            f"'value' must be null or absent for event '{event}'",
            field="value",
        )


# --------------------------------------------------------------------------------------------------
# The usual message in one pass
# --------------------------------------------------------------------------------------------------

#: The usual hub, resident and 'at', checked at once (``f"{hub} {resident} {at}"``: a space is in no id).
#: The 'at' is ``YYYY-MM-DDTHH`` | ``:MM:SS`` | a fraction of 1-6 digits | ``Z`` or an offset of whole hours.
_USUAL = re.compile(
    f"(?:{LOCAL_ID.pattern}) (?:{LOCAL_ID.pattern}) "
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]))"  # the hour, validated with the offset when first seen
    r"(:[0-5][0-9]:[0-5][0-9])"  # minutes and seconds, valid in any hour
    r"(?:\.([0-9]{1,6}))?"
    r"(Z|[+-][0-9]{2}:00)"
)

#: ``hour + offset`` (``"2026-11-20T03+01:00"``) → the UTC hour as text (``"2026-11-20T02"``) and in
#: seconds since the epoch. Hours and offsets only: never an id, nothing tied to a person. Emptied when full.
HOURS_KEPT = 4096
_UTC_HOURS: dict[str, tuple[str, int]] = {}


def _utc_hour(hour: str, offset: str) -> tuple[str, int] | None:
    """The UTC hour a local hour with this offset is, read by the general code; None if it refuses it.

    The offset is whole hours, so every minute of the local hour falls in that one UTC hour: the hour's
    start is in range (and the same text in UTC) exactly when each of its valid minutes and seconds is."""
    try:
        moment = parse_instant(f"{hour}:00:00{offset}", field="at", zone=None)
    except InvalidRecordError:
        return None
    if moment.year < 1000:  # written another way by utc_iso: left to the general path
        return None
    if len(_UTC_HOURS) >= HOURS_KEPT:
        _UTC_HOURS.clear()
    known = _UTC_HOURS[hour + offset] = (
        "%04d-%02d-%02dT%02d" % (moment.year, moment.month, moment.day, moment.hour),  # noqa: UP031
        int(moment.timestamp()),
    )
    return known


def _usual(body: dict[str, Any]) -> list[ParsedEntity] | None:
    """The usual message (known keys only, plain values, a known event, an 'at' of the usual shape) mapped
    in one pass, exactly as the general path maps it; None for anything else (the general path then maps
    it, or says why not)."""
    hub = body.get("hub")
    resident = body.get("resident")
    event = body.get("event")
    at = body.get("at")
    if (
        hub.__class__ is not str
        or resident.__class__ is not str
        or event.__class__ is not str
        or at.__class__ is not str
        or event not in KNOWN_EVENTS
    ):
        return None
    # four known keys are there: a body of six with 'value' and 'confidence' has no other
    if (len(body) != 6 or "value" not in body or "confidence" not in body) and not MESSAGE_FIELDS.issuperset(body):
        return None
    parts = _USUAL.fullmatch(f"{hub} {resident} {at}")
    if parts is None:
        return None
    hour, minutes_seconds, fraction, offset = parts.groups()
    utc = _UTC_HOURS.get(hour + offset) or _utc_hour(hour, offset)
    if utc is None:
        return None
    confidence = body.get("confidence")
    if confidence is not None:
        kind = confidence.__class__
        if (kind is not float and kind is not int) or not 0 <= confidence <= 1:  # (NaN is not in [0, 1])
            return None
    if fraction is None or not fraction.strip("0"):
        stamp = f"{utc[0]}{minutes_seconds}Z"
    else:
        stamp = f"{utc[0]}{minutes_seconds}.{(fraction + '00')[:3]}Z"

    alert = ALERT_EVENTS.get(event)
    if alert is not None:
        if body.get("value") is not None:
            return None
        seconds = utc[1] + int(minutes_seconds[1:3]) * 60 + int(minutes_seconds[4:6])
        if fraction is not None:  # as int(moment.timestamp()) rounds: microseconds / 10**6, toward zero
            seconds = int((seconds * 1_000_000 + int(fraction.ljust(6, "0"))) / 1_000_000)
        sub_category, description = alert
        severity = fall_severity(confidence) if event == "fall_detected" else "critical"
        data: dict[str, Any] = {
            "id": f"urn:ngsi-ld:Alert:{hub}-{seconds}-{event}",
            "type": "Alert",
            "category": "health",
            "subCategory": sub_category,
            "severity": severity,
            "description": description,
            "alertSource": f"urn:ngsi-ld:Device:{hub}",
            "dateIssued": stamp,
            "refResident": f"urn:ngsi-ld:Person:{resident}",
        }
        if sub_category is None:
            del data["subCategory"]
        return [ParsedEntity(data)]

    observation_type, unit, bounds = OBSERVATION_EVENTS[event]
    value: Any = body.get("value")
    if bounds is None:
        if value is not None:
            return None
    else:
        kind = value.__class__
        minimum, maximum = bounds
        if (
            (kind is not int and kind is not float)
            or (kind is float and not math.isfinite(value))
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            return None
    # the general path's key order: the value and its unit, then the confidence, only when given
    data = {
        "id": f"urn:ngsi-ld:ResidentObservation:{hub}-{observation_type}",
        "type": "ResidentObservation",
        "observationType": observation_type,
    }
    if bounds is not None:
        data["numValue"] = value
        data["unitCode"] = unit
    if confidence is not None:
        data["confidence"] = confidence
    data["refResident"] = f"urn:ngsi-ld:Person:{resident}"
    data["refDevice"] = f"urn:ngsi-ld:Device:{hub}"
    data["dateObserved"] = stamp
    return [ParsedEntity(data)]
