"""The whole collection pipeline with real adapters, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from sqlalchemy import Engine

from adapters.base import Adapter, adapter_class
from adapters.care_hub import CareHubAdapter
from adapters.traffic_counter import TrafficCounterAdapter
from governance.config import Settings
from governance.ingest.batch import IngestReport
from governance.ingest.message import ParsedEntity, RawMessage
from governance.ingest.pipeline import Pipeline
from governance.ingest.retry import retry
from governance.ingest.sources import read_capture_lines
from governance.store import entities, quarantine
from tests.conftest import FIXED_NOW

SAMPLES = Path(__file__).parents[3] / "adapters" / "samples"


def care_event(n: int, **overrides: Any) -> dict[str, Any]:
    event = {"hub": f"H-{n:04d}", "resident": f"R-{n:05d}", "event": "heart_rate", "value": 60 + n % 40,
             "confidence": 0.9, "at": f"2026-11-20T03:{n % 60:02d}:00+01:00"}
    event.update(overrides)
    return event


def capture(path: Path, payloads: list[Any], topic: str = "city/care/hubs/x/events") -> Path:
    with path.open("wb") as out:
        for payload in payloads:
            if isinstance(payload, bytes):
                out.write(payload + b"\n")
            else:
                out.write(orjson.dumps({"topic": topic, "payload": payload}) + b"\n")
    return path


def run(pipeline: Pipeline, adapter: Adapter, path: Path) -> IngestReport:
    messages = adapter.read(path, received_at=FIXED_NOW, max_bytes=pipeline.settings.max_payload_bytes)
    report = pipeline.ingest(adapter, messages)
    assert report.balanced, report
    return report


@pytest.fixture
def pipeline(engine: Engine, settings: Settings) -> Pipeline:
    return Pipeline(engine, settings, clock=lambda: FIXED_NOW)


def test_counts_add_up_and_every_rejection_keeps_its_bytes(pipeline: Pipeline, engine: Engine,
                                                           tmp_path: Path) -> None:
    raw_bad = b'{"topic": "t", "payload": "{\\"hub\\": \\"H-1\\"'  # a payload cut mid-object
    path = capture(tmp_path / "care.jsonl", [
        care_event(1),
        care_event(2, event="fall_detected", value=None),
        care_event(3, value="72"),          # wrong type
        care_event(4, at="2026-11-20T03:00:00"),  # no zone
        b"\xff\xfe not utf-8",
        raw_bad,
        care_event(5, event="teleport"),
    ])
    report = run(pipeline, CareHubAdapter(), path)
    assert (report.read, report.accepted, report.quarantined, report.duplicates) == (7, 2, 5, 0)
    assert report.by_reason == {"wrong_type": 1, "timestamp_without_zone": 1, "not_utf8": 1,
                                "invalid_json": 1, "unknown_event": 1}
    assert report.by_type == {"ResidentObservation": 1, "Alert": 1}
    assert entities.count_entities(engine) == 2
    rows = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert len(rows) == 5
    by_reason = {r["reason"]: r for r in rows}
    assert by_reason["not_utf8"]["payload"] == b"\xff\xfe not utf-8"
    assert by_reason["not_utf8"]["step"] == "read"
    assert by_reason["wrong_type"]["field"] == "value"
    assert "value" in by_reason["wrong_type"]["detail"]
    assert all(r["source"].startswith(str(path)) for r in rows)


def test_provenance_is_stored_beside_the_entity(pipeline: Pipeline, engine: Engine, tmp_path: Path) -> None:
    event = care_event(7)
    path = capture(tmp_path / "care.jsonl", [event])
    run(pipeline, CareHubAdapter(), path)
    (row,) = list(entities.iter_entities(engine))
    assert row["raw_sha256"] == hashlib.sha256(orjson.dumps(event)).hexdigest()
    assert (row["adapter"], row["adapter_version"]) == ("care-hub", CareHubAdapter.version)
    assert row["source"] == f"{path}:1"
    assert row["received_at"] == FIXED_NOW and row["stored_at"] == FIXED_NOW
    assert row["dataset"] == "care.observation"
    assert row["observed_at"].isoformat() == "2026-11-20T02:07:00+00:00"
    assert "provenance" not in row["data"] and "adapter" not in row["data"]


def test_same_messages_twice_are_stored_once(pipeline: Pipeline, engine: Engine, tmp_path: Path) -> None:
    payloads = [care_event(n) for n in range(20)] + [care_event(99, value="bad")]
    path = capture(tmp_path / "care.jsonl", payloads + payloads[:5])  # duplicates inside one file too
    first = run(pipeline, CareHubAdapter(), path)
    assert (first.accepted, first.quarantined, first.duplicates) == (20, 1, 5)
    second = run(pipeline, CareHubAdapter(), path)
    assert (second.accepted, second.quarantined, second.duplicates) == (0, 0, 26)
    assert entities.count_entities(engine) == 20
    assert len(quarantine.list_quarantined(engine, quarantine.QuarantineFilter())) == 1


def test_batches_smaller_than_the_input(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    small = Pipeline(engine, settings.model_copy(update={"batch_size": 7}), clock=lambda: FIXED_NOW)
    path = capture(tmp_path / "care.jsonl", [care_event(n) for n in range(50)])
    report = run(small, CareHubAdapter(), path)
    assert report.accepted == 50 and entities.count_entities(engine) == 50


def test_batches_hold_about_the_same_number_of_entities_whatever_the_feed(
        engine: Engine, settings: Settings, tmp_path: Path) -> None:
    """A lighting cabinet's message holds many lamps: its batches hold fewer messages, not more entities."""
    adapter = adapter_class("streetlight-json").from_config_file(SAMPLES / "streetlight-json" / "config.json")
    lamps = [{"id": f"L-0042-{i:02d}", "state": "ON", "dim": 70, "power_w": 38.5, "energy_wh": 1000 + i,
              "fault": None} for i in range(9)]
    cabinets = [{"cabinet": "CAB-0042", "ts": 1795153500000 + n * 900_000, "lamps": lamps, "cabinet_kwh": 5321.7 + n}
                for n in range(40)]
    path = capture(tmp_path / "lighting.jsonl", cabinets, topic="city/lighting/cms/CAB-0042/status")
    small = Pipeline(engine, settings.model_copy(update={"batch_size": 30}), clock=lambda: FIXED_NOW)
    batches: list[IngestReport] = []
    messages = adapter.read(path, received_at=FIXED_NOW, max_bytes=settings.max_payload_bytes)
    total = small.ingest(adapter, messages, on_batch=batches.append)
    per_record = batches[0].entities / batches[0].accepted
    assert per_record == 10  # nine lamps and their cabinet
    assert [b.read for b in batches] == [30] + [3] * 3 + [1]  # 30 records first, then 30 entities a batch
    assert total.accepted == 40 and total.entities == 400
    assert entities.count_entities(engine) == 400


def test_quality_suite_catches_what_the_schema_lets_through(pipeline: Pipeline, engine: Engine,
                                                             tmp_path: Path) -> None:
    # Two reports of the same counter and interval with different counts: each is valid on its own,
    # but together they contradict each other, which only a batch-level expectation can see.
    adapter = TrafficCounterAdapter.from_config_file(SAMPLES / "traffic-counter" / "config.json")
    first = {"sensor": "TC-17", "from": "2026-11-20T07:00:00", "to": "2026-11-20T07:15:00",
             "pedestrians": {"in": 12, "out": 9}, "vehicles": {"car": 31, "bus": 2}, "avg_speed_kmh": 28.4}
    contradicting = {**first, "pedestrians": {"in": 40, "out": 9}}
    other = {**first, "from": "2026-11-20T07:15:00", "to": "2026-11-20T07:30:00"}
    path = capture(tmp_path / "tc.jsonl", [first, contradicting, other], topic="city/traffic/TC-17")
    report = run(pipeline, adapter, path)
    assert (report.accepted, report.quarantined) == (1, 2)
    rows = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert {(r["step"], r["reason"]) for r in rows} == {("quality", "quality_check")}
    assert all("expect_compound_columns_to_be_unique" in r["detail"] for r in rows)
    assert all("urn:ngsi-ld:CrowdFlowObserved:TC-17" in r["detail"] for r in rows)


def test_counter_identifiers_are_never_stored(pipeline: Pipeline, engine: Engine, tmp_path: Path) -> None:
    adapter = TrafficCounterAdapter.from_config_file(SAMPLES / "traffic-counter" / "config.json")
    message = {"sensor": "TC-18", "from": "2026-11-20T08:00:00", "to": "2026-11-20T08:15:00",
               "pedestrians": {"in": 1, "out": 0}, "vehicles": {"car": 1}, "avg_speed_kmh": 30.0,
               "plates": ["1234-BCD"], "face_ids": ["f-9a8b"]}
    run(pipeline, adapter, capture(tmp_path / "tc.jsonl", [message], topic="city/traffic/TC-18"))
    rows = list(entities.iter_entities(engine))
    assert rows
    dump = json.dumps([r["data"] for r in rows])
    assert "1234-BCD" not in dump and "f-9a8b" not in dump
    assert all(set(r["removed_fields"]) >= {"plates", "face_ids"} for r in rows)


def test_retry_after_fixing_the_configuration(pipeline: Pipeline, engine: Engine, tmp_path: Path) -> None:
    config = json.loads((SAMPLES / "traffic-counter" / "config.json").read_text())
    config["sources"].pop("TC-18")
    config_path = tmp_path / "zones.json"
    config_path.write_text(json.dumps(config))
    adapter = TrafficCounterAdapter.from_config_file(config_path)
    message = {"sensor": "TC-18", "from": "2026-11-20T08:00:00", "to": "2026-11-20T08:15:00",
               "pedestrians": {"in": 3, "out": 4}, "vehicles": {"car": 10}, "avg_speed_kmh": 31.0}
    first = run(pipeline, adapter, capture(tmp_path / "tc.jsonl", [message], topic="city/traffic/TC-18"))
    assert first.quarantined == 1
    rows = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert rows[0]["config_ref"] == str(config_path)

    again = retry(pipeline, rows)  # nothing fixed yet: still refused, attempts counted
    assert again.quarantined == 1
    assert quarantine.get_quarantined(engine, rows[0]["pk"])["attempts"] == 2

    config_path.write_text((SAMPLES / "traffic-counter" / "config.json").read_text())  # the fix
    fixed = retry(pipeline, quarantine.list_quarantined(engine, quarantine.QuarantineFilter()))
    assert (fixed.accepted, fixed.quarantined) == (1, 0)
    assert quarantine.list_quarantined(engine, quarantine.QuarantineFilter()) == []
    assert quarantine.get_quarantined(engine, rows[0]["pk"])["status"] == "resolved"
    assert entities.count_entities(engine) == first.entities + fixed.entities > 0

    # the retried message is now known as stored: ingesting it again is a duplicate
    dup = run(pipeline, adapter, tmp_path / "tc.jsonl")
    assert dup.duplicates == 1


def test_oversized_payload_is_quarantined_cut_and_not_retryable(engine: Engine, settings: Settings,
                                                                tmp_path: Path) -> None:
    limited = Pipeline(engine, settings.model_copy(update={"max_payload_bytes": 256}), clock=lambda: FIXED_NOW)
    big = care_event(1, padding="x" * 5000)
    report = run(limited, CareHubAdapter(), capture(tmp_path / "care.jsonl", [big, care_event(2)]))
    assert (report.accepted, report.quarantined) == (1, 1)
    (row,) = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert row["reason"] == "payload_too_large" and row["payload_truncated"]
    assert len(row["payload"]) == 256 and row["payload_size"] > 5000
    again = retry(limited, [row])
    assert again.by_reason == {"payload_too_large": 1}


class ExplodingAdapter(CareHubAdapter):
    """A plugin with a bug: the pipeline must quarantine, not crash."""

    name: ClassVar[str] = "exploding"
    target_types: ClassVar[tuple[str, ...]] = ("Alert",)

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        if b"boom" in message.payload:
            raise ZeroDivisionError("bug")
        return super().parse(message)


def test_an_adapter_bug_is_quarantined_not_raised(pipeline: Pipeline, engine: Engine, tmp_path: Path) -> None:
    path = capture(tmp_path / "c.jsonl", [care_event(1, event="fall_detected", value=None), "boom"])
    report = run(pipeline, ExplodingAdapter(), path)
    assert (report.accepted, report.quarantined) == (1, 1)
    assert report.by_reason == {"adapter_error": 1}


class ListTypedAdapter(CareHubAdapter):
    """A plugin that writes its entity type as a list: refused, not a crash (a list cannot key a lookup)."""

    name: ClassVar[str] = "list-typed"

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        entities = super().parse(message)
        for entity in entities:
            entity.data["type"] = [entity.data["type"]]
        return entities


def test_entities_of_types_an_adapter_does_not_declare_are_quarantined(pipeline: Pipeline, engine: Engine,
                                                                       tmp_path: Path) -> None:
    path = capture(tmp_path / "c.jsonl", [care_event(1, event="fall_detected", value=None), care_event(2),
                                          care_event(3, event="sos_button", value=None)])
    report = run(pipeline, ExplodingAdapter(), path)  # declares Alert only; a heart rate is an observation
    assert (report.accepted, report.quarantined) == (2, 1)
    [row] = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert row["reason"] == "unexpected_entity_type"
    assert row["detail"] == "adapter exploding produced 'ResidentObservation', which it does not declare"

    report = run(pipeline, ListTypedAdapter(), capture(tmp_path / "d.jsonl", [care_event(4)]))
    assert (report.accepted, report.quarantined) == (0, 1)
    assert report.by_reason == {"unexpected_entity_type": 1}


def test_every_shipped_sample_balances(pipeline: Pipeline) -> None:
    for folder in sorted(SAMPLES.iterdir()):
        cls = adapter_class(folder.name)
        config = folder / "config.json"
        adapter = cls.from_config_file(config if config.exists() else None)
        files = sorted(folder.glob("*.jsonl")) or sorted(folder.glob("*.csv"))
        for path in files:
            report = run(pipeline, adapter, path)
            assert report.accepted > 0, folder.name
            assert report.quarantined > 0, f"{folder.name} ships no bad records"


def test_capture_reader_and_pipeline_agree_on_line_numbers(pipeline: Pipeline, engine: Engine,
                                                           tmp_path: Path) -> None:
    path = capture(tmp_path / "care.jsonl", [care_event(1), b"", care_event(2, value=None)])
    messages = list(read_capture_lines(path, received_at=FIXED_NOW, max_bytes=1000))
    assert [m.context["line"] for m in messages] == [1, 3]
    run(pipeline, CareHubAdapter(), path)
    (row,) = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert row["source"].endswith(":3")
