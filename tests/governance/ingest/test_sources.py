from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import orjson

from governance.ingest.sources import read_capture_lines
from tests.conftest import FIXED_NOW


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_payload_forms(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "cap.jsonl",
        [
            orjson.dumps({"topic": "a", "payload": {"x": 1}, "received_at": "2026-11-20T06:00:00Z"}),
            orjson.dumps({"topic": "b", "payload": "t|21.4"}),
            orjson.dumps({"topic": "c", "payload_b64": base64.b64encode(b"\xff\x00").decode()}),
            b"",
        ],
    )
    messages = list(read_capture_lines(path, received_at=FIXED_NOW, max_bytes=1024))
    assert [m.payload for m in messages] == [b'{"x":1}', b"t|21.4", b"\xff\x00"]
    assert [m.topic for m in messages] == ["a", "b", "c"]
    assert messages[0].received_at.isoformat() == "2026-11-20T06:00:00+00:00"
    assert messages[1].received_at == FIXED_NOW
    assert all(m.defect is None for m in messages)
    assert [m.context["line"] for m in messages] == [1, 2, 3]


def test_broken_lines_become_records_with_defects(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "cap.jsonl",
        [
            b"{not json",
            b"\xff\xfe\xfd",
            b"[1, 2]",
            orjson.dumps({"topic": "x"}),
            orjson.dumps({"payload": "x", "received_at": "soon"}),
            orjson.dumps({"payload_b64": "***"}),
        ],
    )
    messages = list(read_capture_lines(path, received_at=FIXED_NOW, max_bytes=1024))
    reasons = [m.defect.reason if m.defect else None for m in messages]
    assert reasons == [
        "invalid_json", "not_utf8", "invalid_envelope", "invalid_envelope", "invalid_envelope", "invalid_envelope",
    ]
    assert messages[1].payload == b"\xff\xfe\xfd"  # the raw bytes are kept as they were


def test_overlong_line_is_cut_flagged_and_reading_goes_on(tmp_path: Path) -> None:
    huge = orjson.dumps({"topic": "t", "payload": "x" * 100_000})
    path = _write(tmp_path / "cap.jsonl", [huge, orjson.dumps({"topic": "t", "payload": "ok"})])
    messages = list(read_capture_lines(path, received_at=FIXED_NOW, max_bytes=1000))
    assert len(messages) == 2
    assert messages[0].defect is not None and messages[0].defect.reason == "payload_too_large"
    assert len(messages[0].payload) == 1000 + 4096
    assert messages[0].context["original_size"] == len(huge)
    assert messages[0].context["original_sha256"] == hashlib.sha256(huge).hexdigest()
    assert messages[1].payload == b"ok" and messages[1].context["line"] == 2


def test_fingerprint_depends_on_adapter_topic_and_bytes(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "cap.jsonl",
        [orjson.dumps({"topic": "a", "payload": "p"}), orjson.dumps({"topic": "b", "payload": "p"})],
    )
    a, b = read_capture_lines(path, received_at=FIXED_NOW, max_bytes=100)
    assert a.fingerprint("x") != b.fingerprint("x")
    assert a.fingerprint("x") != a.fingerprint("y")
    assert a.fingerprint("x") == a.fingerprint("x")


def test_json_payloads_take_only_their_own_size_in_memory(tmp_path: Path) -> None:
    """A batch holds every payload until it is stored: a 170-byte event must not occupy orjson's 4 KiB
    output buffer (the reader copies it into a bytes object of its own size)."""
    import tracemalloc

    event = {"hub": "H-1029", "resident": "R-55812", "event": "heart_rate", "value": 72, "confidence": 0.98,
             "at": "2026-11-20T03:20:00+01:00"}
    path = tmp_path / "capture.jsonl"
    lines = [orjson.dumps({"topic": f"city/care/hubs/H-{i}/events", "payload": {**event, "value": i}})
             for i in range(500)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        payloads = [m.payload for m in read_capture_lines(path, received_at=FIXED_NOW, max_bytes=65536)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [orjson.loads(p)["value"] for p in payloads] == list(range(500))
    assert held < 500 * 1024, f"{held / 500:.0f} bytes per payload"
