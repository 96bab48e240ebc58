"""Home care hubs of seniors living alone: one JSON event per message.

``{"hub": "H-1029", "resident": "R-55812", "event": "fall_detected", "value": null, "confidence": 0.93,
"at": "2026-11-20T03:12:44+01:00"}``. Falls and SOS presses become ``Alert`` entities (category
``health``); inactivity, heart rate, door and bed sensors become ``ResidentObservation`` entities, the
project's care extension of Smart Data Models. The resident is only ever a relationship
(``refResident``), never part of an entity id.
"""

from __future__ import annotations

from typing import Any

from adapters.base import Adapter
from adapters.fields import decode_json_object, describe, local_id, number, require, string, unknown_keys
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
        body = decode_json_object(message.payload)
        removed = unknown_keys(body, MESSAGE_FIELDS)
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
