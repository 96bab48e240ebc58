"""Inserts through the driver store exactly what SQLAlchemy's ``insert()`` stores, and fail the same way."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, Table, delete, select
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import IntegrityError, StatementError

from governance.store import bulk, entities, ledger
from governance.store.tables import EntityRecord, IngestMessage
from tests.conftest import FIXED_NOW

ENTITY: Table = EntityRecord.__table__  # type: ignore[attr-defined]
LEDGER: Table = IngestMessage.__table__  # type: ignore[attr-defined]

AWKWARD_TIMES = [
    FIXED_NOW,
    FIXED_NOW.replace(microsecond=1),
    FIXED_NOW.replace(microsecond=999_999),
    datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # stored as its wall-clock fields
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 11, 20, 12, 0),  # naive
]


def _rows(count: int, **extra: Any) -> list[dict[str, Any]]:
    rows = []
    for n in range(count):
        rows.append({
            "entity_id": f"urn:ngsi-ld:ResidentObservation:H-{n}",
            "entity_type": "ResidentObservation",
            "dataset": "care.observation",
            "observed_at": None if n % 4 == 0 else AWKWARD_TIMES[n % len(AWKWARD_TIMES)],
            "data": {"id": f"urn:ngsi-ld:ResidentObservation:H-{n}", "n": n, "f": n / 7, "text": "é\u2028\"\\\t",
                     "nested": {"list": [1, None, True, {"x": []}]}, "big": 2**60},
            "adapter": "care-hub",
            "adapter_version": "1.0.0",
            "source": f"capture.jsonl:{n}",
            "received_at": AWKWARD_TIMES[(n + 1) % len(AWKWARD_TIMES)],
            "stored_at": FIXED_NOW,
            "raw_sha256": f"{n:064x}",
            "message_fingerprint": f"{n + 1:064x}",
            "removed_fields": ["plate"] if n % 2 else [],
            **extra,
        })
    return rows


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    columns = [c for c in ENTITY.columns if c.name != "pk"]
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(*columns).order_by(ENTITY.c.pk))]


def _assert_stored_as_sqlalchemy_stores(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """``rows`` written through the fast path read back exactly as SQLAlchemy's own ``insert()`` of them."""
    with engine.begin() as conn:
        conn.execute(ENTITY.insert(), rows)
    expected = _stored(engine)
    with engine.begin() as conn:
        conn.execute(delete(ENTITY))
    with engine.begin() as conn:
        entities.add_entities(conn, rows)
    assert _stored(engine) == expected


@pytest.mark.parametrize("extra", [{}, {"subject": "psn:v1:abc", "retain_until": FIXED_NOW, "policy_revision": "r1"},
                                   {"subject": None, "retain_until": None, "policy_revision": None}])
def test_same_rows_as_sqlalchemy_insert(engine: Engine, extra: dict[str, Any]) -> None:
    rows = _rows(40, **extra)
    _assert_stored_as_sqlalchemy_stores(engine, rows)
    assert bulk._plan(engine.dialect, ENTITY, tuple(rows[0])) is not None  # the fast path was taken


def test_entities_read_back_unchanged(engine: Engine) -> None:
    rows = _rows(12)
    with engine.begin() as conn:
        entities.add_entities(conn, rows)
    stored = list(entities.iter_entities(engine))
    assert [r["data"] for r in stored] == [r["data"] for r in rows]
    assert [r["removed_fields"] for r in stored] == [r["removed_fields"] for r in rows]
    for got, sent in zip(stored, rows, strict=True):
        if sent["observed_at"] is not None and sent["observed_at"].utcoffset() == timedelta(0):
            assert got["observed_at"] == sent["observed_at"]


def test_a_duplicate_fingerprint_is_an_integrity_error_and_nothing_is_kept(engine: Engine) -> None:
    row = {"fingerprint": "1" * 64, "adapter": "a", "status": "stored", "received_at": FIXED_NOW, "entity_count": 1}
    with engine.begin() as conn:
        ledger.add_messages(conn, [row])
    fresh = {**row, "fingerprint": "2" * 64}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        ledger.add_messages(conn, [fresh, row])
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(select(LEDGER.c.fingerprint))] == ["1" * 64]
        assert ledger.known_fingerprints(conn, ["1" * 64, "2" * 64, "3" * 64]) == {"1" * 64: "stored"}


def test_ledger_lookup_in_chunks(engine: Engine) -> None:
    rows = [{"fingerprint": f"{n:064x}", "adapter": "a", "status": "stored" if n % 2 else "quarantined",
             "received_at": FIXED_NOW, "entity_count": 0} for n in range(2000)]
    with engine.begin() as conn:
        ledger.add_messages(conn, rows)
    wanted = [f"{n:064x}" for n in range(0, 2500, 3)] * 2
    with engine.connect() as conn:
        found = ledger.known_fingerprints(conn, wanted)
    assert found == {f"{n:064x}": "stored" if n % 2 else "quarantined" for n in range(0, 2000, 3)}


def test_ledger_lookup_beyond_one_array(engine: Engine) -> None:
    """More fingerprints than one lookup takes (PostgreSQL: one text array of 10,000; SQLite: IN lists of 900)."""
    rows = [{"fingerprint": f"{n:064x}", "adapter": "a", "status": "stored", "received_at": FIXED_NOW,
             "entity_count": 1} for n in range(0, 24_000, 2)]
    with engine.begin() as conn:
        ledger.add_messages(conn, rows)
    wanted = [f"{n:064x}" for n in range(24_000)] + ["'); DROP TABLE ingest_message; --"]
    with engine.connect() as conn:
        found = ledger.known_fingerprints(conn, wanted)
    assert found == {f"{n:064x}": "stored" for n in range(0, 24_000, 2)}


def test_rows_the_fast_path_does_not_know_go_through_sqlalchemy(engine: Engine) -> None:
    # a later row without a column: SQLAlchemy's own error, as before
    rows = _rows(3)
    del rows[2]["source"]
    with pytest.raises(StatementError), engine.begin() as conn:
        entities.add_entities(conn, rows)
    # a key that is not a column: SQLAlchemy's executemany leaves it out, and so does the store
    with engine.begin() as conn:
        conn.execute(ENTITY.insert(), _rows(2, colour="blue"))
    expected = _stored(engine)
    with engine.begin() as conn:
        conn.execute(delete(ENTITY))
        entities.add_entities(conn, _rows(2, colour="blue"))
    assert _stored(engine) == expected
    with engine.begin() as conn:
        conn.execute(delete(ENTITY))
    # a value of a type the fast path does not convert: written by SQLAlchemy (PostgreSQL parses the
    # text), or refused by it (SQLite's DateTime takes datetimes only)
    odd = _rows(2)
    odd[1]["observed_at"] = "2026-11-20 12:00:00"
    assert _outcome(engine, lambda conn: conn.execute(ENTITY.insert(), odd)) == _outcome(
        engine, lambda conn: entities.add_entities(conn, odd)
    )


def _outcome(engine: Engine, insert: Callable[[Connection], object]) -> object:
    """What an insert leads to: the rows stored, or the class of the exception; the table is emptied."""
    try:
        with engine.begin() as conn:
            insert(conn)
        outcome: object = _stored(engine)
    except Exception as exc:
        outcome = type(exc)
    with engine.begin() as conn:
        conn.execute(delete(ENTITY))
    return outcome


def test_a_value_the_database_refuses_fails_the_same_way(engine: Engine) -> None:
    rows = _rows(2)
    rows[1]["data"] = {"text": "nul \x00"}  # PostgreSQL's jsonb refuses \u0000; SQLite keeps it
    assert _outcome(engine, lambda conn: conn.execute(ENTITY.insert(), rows)) == _outcome(
        engine, lambda conn: entities.add_entities(conn, rows)
    )


def test_sqlite_datetime_text_is_sqlalchemys() -> None:
    process = SQLITE_DATETIME().bind_processor(sqlite_dialect())  # type: ignore[no-untyped-call]
    assert process is not None
    moments = [*AWKWARD_TIMES, datetime(999, 1, 2, 3, 4, 5, 6),
               datetime(2026, 1, 1, tzinfo=timezone(-timedelta(hours=5)))]
    for moment in moments:
        assert bulk._sqlite_datetime(moment) == process(moment)
    assert bulk._sqlite_datetime(None) is None


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.none() | st.timezones()))
def test_sqlite_datetime_text_is_sqlalchemys_for_any_time(moment: datetime) -> None:
    process = SQLITE_DATETIME().bind_processor(sqlite_dialect())  # type: ignore[no-untyped-call]
    assert process is not None
    assert bulk._sqlite_datetime(moment) == process(moment)


def test_repeated_times_keep_their_own_zone(engine: Engine) -> None:
    """Times repeated in a batch are formatted once per distinct value; equal instants in two zones are
    still stored with their own wall-clock fields, as SQLAlchemy stores them (an awkward value in the
    middle of the column is formatted too)."""
    utc = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    plus_one = utc.astimezone(timezone(timedelta(hours=1)))
    assert utc == plus_one
    times = [utc, utc, plus_one, utc, plus_one, None, datetime(2026, 11, 24, 9, 0), plus_one]
    rows = _rows(len(times))
    for row, moment in zip(rows, times, strict=True):
        row["observed_at"] = moment
        row["received_at"] = moment or utc
    _assert_stored_as_sqlalchemy_stores(engine, rows)


def test_a_memo_shared_by_two_inserts_stores_what_separate_inserts_store(engine: Engine) -> None:
    """The pipeline converts a batch's times once for the ledger and the entity table: the same moment in
    two zones, and naive and aware times, still come out as SQLAlchemy would store each."""
    utc = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    plus_one = utc.astimezone(timezone(timedelta(hours=1)))
    times = [utc, plus_one, datetime(2026, 11, 24, 9, 0), utc + timedelta(microseconds=5), plus_one]
    rows = _rows(len(times))
    for row, moment in zip(rows, times, strict=True):
        row["observed_at"] = moment
        row["received_at"] = moment
    ledger_rows = [{"fingerprint": f"{n:064x}", "adapter": "a", "status": "stored", "received_at": moment,
                    "entity_count": 1} for n, moment in enumerate(reversed(times))]

    def stored() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with engine.connect() as conn:
            kept = [tuple(r) for r in conn.execute(select(LEDGER).order_by(LEDGER.c.fingerprint))]
        return _stored(engine), kept

    with engine.begin() as conn:
        conn.execute(LEDGER.insert(), ledger_rows)
        conn.execute(ENTITY.insert(), rows)
    expected = stored()
    with engine.begin() as conn:
        conn.execute(delete(ENTITY))
        conn.execute(delete(LEDGER))
    memo: dict[Any, dict[Any, Any]] = {}
    with engine.begin() as conn:
        ledger.add_messages(conn, ledger_rows, memo=memo)
        entities.add_entities(conn, rows, memo=memo)
    assert stored() == expected
    if engine.dialect.name == "sqlite":  # (PostgreSQL takes datetimes as they are: nothing to convert)
        [converted] = memo.values()
        assert {(t, t.tzinfo) for t in times} <= set(converted)  # each distinct time converted once, for both
