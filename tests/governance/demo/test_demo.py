"""The generated city day: deterministic, shaped like a real day, and every defect accounted for."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from adapters.base import adapter_class, load_config
from governance.assembly import build_pipeline
from governance.cli.main import app
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.demo import (
    DEFAULT_DATE,
    FEED_NAMES,
    build_plan,
    ingest_demo,
    make_feed,
    record_consents,
    simulate_day,
    sun_times,
    write_demo,
)
from governance.demo.city import ZONE
from governance.demo.feeds import CsvRow
from governance.store import entities, quarantine
from tests.conftest import FIXED_NOW

SCALE = 0.1


def local_hour(moment: datetime) -> int:
    return moment.astimezone(ZONE).hour


def clean_day(adapter: str, *, scale: float = 0.2, day: date = DEFAULT_DATE) -> list[Any]:
    feed = make_feed(adapter, build_plan(7, scale))
    return [item for item, _ in feed.generate([day], defect_rate=0)]


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    first = write_demo(tmp_path / "a", seed=5, scale=SCALE)
    second = write_demo(tmp_path / "b", seed=5, scale=SCALE)
    other = write_demo(tmp_path / "c", seed=6, scale=SCALE)
    assert set(first.feeds) == set(FEED_NAMES)
    for name, written in first.feeds.items():
        assert written.records > 0
        assert written.input.read_bytes() == second.feeds[name].input.read_bytes(), name
        assert written.input.read_bytes() != other.feeds[name].input.read_bytes(), name
        if written.config is not None:
            assert written.config.read_bytes() == second.feeds[name].config.read_bytes()  # type: ignore[union-attr]
            # the configurations are valid documents of each adapter's own model
            cls = adapter_class(name)
            cls(load_config(cls.config_model, written.config))
    assert first.manifest.read_bytes() == second.manifest.read_bytes()


def test_about_two_percent_of_a_full_day_is_defective(tmp_path: Path) -> None:
    files = write_demo(tmp_path, scale=1.0)
    records = sum(f.records for f in files.feeds.values())
    defects = sum(len(f.defects) for f in files.feeds.values())
    assert 5000 < records < 20_000
    assert 0.01 <= defects / records <= 0.03
    assert json.loads(files.manifest.read_bytes())["feeds"]["care-hub"]["records"] == files.feeds["care-hub"].records


def test_sun_times_for_the_city_in_november() -> None:
    sunrise, sunset = sun_times(date(2026, 11, 20))
    # Madrid, 20 November: sunrise about 08:07 and sunset about 17:55 local time (UTC+1)
    assert datetime(2026, 11, 20, 7, 0, tzinfo=UTC) < sunrise < datetime(2026, 11, 20, 7, 20, tzinfo=UTC)
    assert datetime(2026, 11, 20, 16, 45, tzinfo=UTC) < sunset < datetime(2026, 11, 20, 17, 5, tzinfo=UTC)
    summer_rise, summer_set = sun_times(date(2026, 6, 21))
    assert summer_set - summer_rise > sunset - sunrise


def test_lamps_are_off_at_noon_full_in_the_evening_and_dimmed_late_at_night() -> None:
    by_hour: dict[int, list[dict[str, Any]]] = defaultdict(list)
    energy: dict[str, list[float]] = defaultdict(list)
    for item in clean_day("streetlight-json"):
        moment = datetime.fromtimestamp(item.payload["ts"] / 1000, tz=UTC)
        for lamp in item.payload["lamps"]:
            if lamp["fault"] is None:
                by_hour[local_hour(moment)].append(lamp)
            if lamp["energy_wh"] is not None:
                energy[lamp["id"]].append(lamp["energy_wh"])
    noon = by_hour[12]
    assert all(lamp["state"] == "OFF" and lamp["dim"] == 0 for lamp in noon)
    assert all(lamp["power_w"] < 1 for lamp in noon)  # standby only
    evening = by_hour[20]
    assert statistics.mean(lamp["dim"] for lamp in evening) == 100
    late = by_hour[3]
    assert all(lamp["state"] in ("ON", "LOW") for lamp in late)
    assert 30 <= statistics.mean(lamp["dim"] for lamp in late) < 90
    # power follows the dim level, for lamps of the same rating
    assert statistics.mean(lamp["power_w"] for lamp in late) < statistics.mean(lamp["power_w"] for lamp in evening)
    # energy only ever accumulates
    assert all(series == sorted(series) for series in energy.values())


def test_dimming_follows_night_activity() -> None:
    plan = build_plan(7, 0.5)
    city = simulate_day(plan, DEFAULT_DATE)
    items = clean_day("streetlight-json", scale=0.5)
    pairs: list[tuple[float, int]] = []
    for item in items:
        moment = datetime.fromtimestamp(item.payload["ts"] / 1000, tz=UTC)
        if 0 <= local_hour(moment) < 5:
            slot = max(i for i, end in enumerate(city.slots) if end <= moment)
            cabinet = next(c for c in plan.cabinets if c.id == item.payload["cabinet"])
            if cabinet.working_mode == "automatic":
                dims = [lamp["dim"] for lamp in item.payload["lamps"] if lamp["fault"] is None]
                pairs.append((city.activity(cabinet.counter, slot), statistics.mean(dims)))
    pairs.sort()
    quiet, busy = pairs[: len(pairs) // 4], pairs[-len(pairs) // 4 :]
    assert statistics.mean(d for _, d in busy) > statistics.mean(d for _, d in quiet)


def test_traffic_peaks_in_the_morning_and_evening() -> None:
    vehicles: Counter[int] = Counter()
    for item in clean_day("traffic-counter"):
        start = datetime.fromisoformat(item.payload["from"])  # local time, no offset
        assert start.tzinfo is None
        vehicles[start.hour] += sum(item.payload.get("vehicles", {}).values())
    assert vehicles.most_common(1)[0][0] in (7, 8, 9)
    assert max(vehicles[h] for h in (17, 18, 19, 20)) > 2 * vehicles[14] / 1.5 > vehicles[3]
    assert vehicles[3] < vehicles[8] / 5


def test_weather_and_air_follow_the_day() -> None:
    temperature: dict[int, list[float]] = defaultdict(list)
    humidity: dict[int, list[float]] = defaultdict(list)
    no2: dict[int, list[float]] = defaultdict(list)
    noise: dict[int, list[float]] = defaultdict(list)
    for item in clean_day("ultralight", scale=0.5):
        hour = local_hour(item.received_at)
        fields = item.payload.split("|")
        if fields[0][:1].isdigit():
            fields = fields[1:]
        values = dict(zip(fields[0::2], fields[1::2], strict=True))
        if "no2" in values:
            temperature[hour].append(float(values["t"]))
            humidity[hour].append(float(values["h"]))
            no2[hour].append(float(values["no2"]))
        if "laeq" in values:
            noise[hour].append(float(values["laeq"]))
    mean_t = {h: statistics.mean(v) for h, v in temperature.items()}
    assert 13 <= max(mean_t, key=mean_t.__getitem__) <= 16  # warmest mid-afternoon
    assert 6 <= min(mean_t, key=mean_t.__getitem__) <= 9  # coldest around dawn
    mean_h = {h: statistics.mean(v) for h, v in humidity.items()}
    assert mean_h[min(mean_t, key=mean_t.__getitem__)] > mean_h[max(mean_t, key=mean_t.__getitem__)]
    assert statistics.mean(no2[8]) > 1.5 * statistics.mean(no2[3])
    assert statistics.mean(noise[18]) > statistics.mean(noise[3]) + 5


def test_care_day_has_nights_days_and_a_couple_of_alerts() -> None:
    events = [item.payload for item in clean_day("care-hub", scale=1.0)]
    kinds = Counter(e["event"] for e in events)
    assert 1 <= kinds["fall_detected"] <= 2 and 1 <= kinds["sos_button"] <= 2
    assert kinds["heart_rate"] > 10 * 30
    hours = defaultdict(list)
    for e in events:
        hours[e["event"]].append(local_hour(datetime.fromisoformat(e["at"].replace("Z", "+00:00"))))
    assert all(h < 10 for h in hours["bed_exit"])
    assert all(9 <= h <= 20 for h in hours["door_open"])
    assert all(e["at"].endswith(("Z", "+01:00")) for e in events)


def test_the_csv_export_is_what_departments_write(tmp_path: Path) -> None:
    files = write_demo(tmp_path, scale=SCALE)
    raw = files.feeds["department-csv"].input.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfEstaci\xc3\xb3n;Fecha;Hora;")
    assert b'"' in raw and re.search(rb";\d+,\d;", raw)  # quoted cells and decimal commas
    rows = [item for item in clean_day("department-csv") if isinstance(item, CsvRow)]
    assert len({row.cells[0] for row in rows}) * 24 == len(rows)


def test_defects_are_quarantined_with_their_reasons_and_a_second_run_is_all_duplicates(
    tmp_path: Path, engine: Engine, settings: Settings
) -> None:
    files = write_demo(tmp_path / "demo", scale=SCALE)
    registry = ConsentRegistry.from_settings(settings, engine, clock=lambda: FIXED_NOW - timedelta(days=3))
    assert record_consents(registry, files.plan) == len(files.plan.residents)
    assert record_consents(registry, files.plan) == 0  # recorded once
    pipeline = build_pipeline(engine, settings, clock=lambda: FIXED_NOW)  # policy, consent, audit: as the CLI
    result = ingest_demo(files, pipeline)
    assert set(result.reports) == set(FEED_NAMES)
    for name, report in result.reports.items():
        written = files.feeds[name]
        assert report.balanced and report.read == written.records, name
        assert report.by_reason == written.expected_reasons(), name
        assert report.duplicates == written.expected_duplicates() >= 1, name
        stored = quarantine.list_quarantined(engine, quarantine.QuarantineFilter(adapter=name, limit=1000))
        assert Counter(r["reason"] for r in stored) == written.expected_reasons(), name
    # the reasons the issue asks for are all there
    reasons = result.totals.by_reason
    for reason in ("invalid_json", "not_utf8", "wrong_type", "missing_field", "out_of_range", "unknown_device",
                   "unknown_apikey", "timestamp_without_zone", "csv_field_count", "unknown_fault",
                   "payload_too_large", "quality_check"):
        assert reasons[reason] >= 1, reason
    oversized = quarantine.list_quarantined(engine, quarantine.QuarantineFilter(reason="payload_too_large"))
    assert oversized[0]["payload_truncated"] and oversized[0]["payload_size"] > settings.max_payload_bytes
    stored_entities = entities.count_entities(engine)
    assert stored_entities == result.totals.entities
    assert entities.counts_by_type(engine).keys() >= {"Streetlight", "TrafficFlowObserved", "AirQualityObserved",
                                                      "NoiseLevelObserved", "Device", "Alert", "ResidentObservation"}

    assert result.reports["care-hub"].by_type["ResidentObservation"] > 0  # the consents let them through

    again = ingest_demo(write_demo(tmp_path / "demo", scale=SCALE), pipeline)
    assert again.rerun
    for name, report in again.reports.items():
        assert report.read == report.duplicates == files.feeds[name].records, name
        assert report.accepted == report.quarantined == 0
    assert entities.count_entities(engine) == stored_entities


def test_cli_demo_json_then_text_rerun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CITYGOV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CITYGOV_DATABASE_URL", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--scale", str(SCALE), "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["adapters"]) == set(FEED_NAMES)
    assert out["rerun"] is False and out["date"] == "2026-11-20"
    assert out["consents_recorded"] == 3 and "no_legal_basis" not in out["adapters"]["care-hub"]["by_reason"]
    totals = out["totals"]
    assert totals["read"] == totals["accepted"] + totals["quarantined"] + totals["duplicates"]
    assert totals["read"] == sum(a["read"] for a in out["adapters"].values())
    assert totals["quarantined"] > 0 and totals["entities"] > 1000
    for name in FEED_NAMES:
        report = out["adapters"][name]
        assert report["read"] == report["accepted"] + report["quarantined"] + report["duplicates"]
        assert Path(out["files"][name]["input"]).is_file()
    directory = tmp_path / "data" / "demo" / "2026-11-20"
    assert Path(out["directory"]) == directory and (directory / "defects.json").is_file()
    assert (tmp_path / "data" / "citygov.db").is_file()  # the embedded default store

    result = runner.invoke(app, ["demo", "--scale", str(SCALE), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "idempotent" in result.stdout and "ingest summary" in result.stdout
    assert f"all {totals['read']} records" in " ".join(result.stdout.split())

    result = runner.invoke(app, ["demo", "--date", "20-11-2026"])
    assert result.exit_code == 2
