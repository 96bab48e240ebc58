"""The per-request bookkeeping made cheap: the latency histogram (one bucket counted per observation, cumulated
when rendered) and the JSON log line (its time text reused within a second)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import orjson
import pytest

from governance.api.metrics import BUCKETS, Metrics
from governance.logs import JsonFormatter
from tests.governance.api.support import QUERY_PATH, ApiHarness


def _buckets(text: str, route: str) -> dict[str, int]:
    found = re.findall(rf'citygov_http_request_duration_seconds_bucket\{{route="{re.escape(route)}",le="([^"]+)"\}} '
                       r"(\d+)", text)
    return {bound: int(count) for bound, count in found}


def test_histogram_buckets_are_cumulative_with_le_bounds() -> None:
    metrics = Metrics()
    observations = [0.0005, 0.001, 0.0011, 0.004, 0.05, 0.3, 5.0, 7.5]  # on a bound counts in that bucket
    for seconds in observations:
        metrics.observe_request("POST", "/v1/data/query", 200, seconds)
    metrics.observe_request("GET", "/healthz", 200, 0.002)
    text = metrics.render()
    buckets = _buckets(text, "/v1/data/query")
    assert len(buckets) == len(BUCKETS) + 1
    for bound in BUCKETS:
        label = next(k for k in buckets if k != "+Inf" and float(k) == bound)
        assert buckets[label] == sum(1 for s in observations if s <= bound), bound
    assert buckets["+Inf"] == len(observations)
    assert f'citygov_http_request_duration_seconds_count{{route="/v1/data/query"}} {len(observations)}' in text
    assert _buckets(text, "/healthz")["+Inf"] == 1
    assert _buckets(text, "/healthz")["0.001"] == 0 and _buckets(text, "/healthz")["0.0025"] == 1
    assert 'citygov_http_requests_total{method="POST",route="/v1/data/query",status="200"} 8' in text


def _record(created: float, message: str = "request", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("citygov.api", logging.INFO, __file__, 1, message, (), None)
    record.created = created
    record.__dict__.update(extra)
    return record


def test_json_log_lines_keep_their_format() -> None:
    formatter = JsonFormatter()
    for created in (1795176000.123456, 1795176000.9999, 1795176001.0, 1795176059.5004, 1795176000.0009):
        line = orjson.loads(formatter.format(_record(created, request_id="r1", status=200, caller=None)))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
        assert int(line["time"][20:23]) == int((created - int(created)) * 1000)
        assert line["time"][:19] == datetime.fromtimestamp(int(created), UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert {k: line[k] for k in ("level", "logger", "message", "request_id", "status", "caller")} == {
            "level": "info", "logger": "citygov.api", "message": "request", "request_id": "r1", "status": 200,
            "caller": None}
    warning = _record(1795176000.5)
    warning.levelno, warning.levelname = logging.WARNING, "WARNING"
    assert orjson.loads(formatter.format(warning))["level"] == "warning"
    custom = _record(1795176000.5)
    custom.levelname = "NOTICE"  # a level name of someone else's
    assert orjson.loads(formatter.format(custom))["level"] == "notice"


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "citygov.api" and r.getMessage() == "request"]


def test_one_request_line_at_info_and_none_at_warning(api: ApiHarness, caplog: pytest.LogCaptureFixture) -> None:
    energy = api.register("energy")
    body = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id", "powerState"],
                         "page_size": 10})
    caplog.set_level(logging.INFO, logger="citygov.api")
    response = api.signed_post(energy, body)
    assert response.status_code == 200
    lines = _request_lines(caplog)
    assert len(lines) == 1
    line = lines[0].__dict__
    assert {k: line[k] for k in ("method", "route", "path", "status", "caller")} == {
        "method": "POST", "route": QUERY_PATH, "path": QUERY_PATH, "status": 200, "caller": "department:energy"}
    assert line["request_id"] == response.headers["x-request-id"] and line["duration_ms"] >= 0
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="citygov.api")
    assert api.signed_post(energy, body).status_code == 200
    assert _request_lines(caplog) == []
