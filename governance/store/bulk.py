"""Batch inserts through the driver: the store's hot path.

``conn.execute(table.insert(), rows)`` costs several microseconds of SQLAlchemy per row and value
(parameter dicts, bind processors, compiled-parameter construction) on top of what the database
itself spends. :func:`insert_rows` writes the same values with one ``executemany`` through the
driver (SQLite) or one ``COPY … FROM STDIN`` (PostgreSQL, psycopg 3), inside the caller's
transaction, converting only the columns that need it:

- ``DateTime`` on SQLite: the text SQLAlchemy's SQLite dialect stores (``YYYY-MM-DD HH:MM:SS.ffffff``,
  the wall-clock fields as given — every citygov time is UTC), so SQLAlchemy reads it back unchanged;
- ``JSON``/``JSONB``: the engine's JSON serializer (orjson), as SQLAlchemy would call it.

Anything the fast path does not recognise — rows whose keys are not the table's columns, a column
left out that has a Python-side default, a value of an unexpected type — goes through SQLAlchemy's
own ``insert()`` instead, so behaviour (including its errors) is unchanged. Driver errors come back
as SQLAlchemy exceptions (a duplicate key is an ``IntegrityError``), as with ``conn.execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Connection, DateTime, Float, Integer, String, Table, TypeDecorator
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import Dialect

Converter = Callable[[Any], Any]
_JSON_VALUES = (dict, list, str, int, float, bool, type(None))


class _FallbackError(Exception):
    """A value the fast path does not handle: write the batch through SQLAlchemy instead."""


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                memo: dict[Any, dict[Any, Any]] | None = None) -> None:
    """Insert ``rows`` (dicts keyed by column name) into ``table`` in the current transaction.

    Same rows in, same stored values and same exceptions out as ``conn.execute(table.insert(), rows)``.
    ``memo``: where converted times are remembered, for several inserts of one batch to share (a message's
    ``received_at`` goes into the ledger and into each of its entities); by default, this insert only.
    """
    if not rows:
        return
    dialect = conn.dialect
    plan = _plan(dialect, table, tuple(rows[0]))
    if plan is not None:
        try:
            values = plan.values(rows, {} if memo is None else memo)
        except (_FallbackError, KeyError):  # a row without a column the first row has: SQLAlchemy says so
            values = None
        if values is not None:
            plan.write(conn, values)
            return
    conn.execute(table.insert(), list(rows))


class _Plan:
    """How to write rows with one set of keys into one table, for one dialect."""

    def __init__(self, dialect: Dialect, table: Table, columns: list[Column[Any]]) -> None:
        self.table = table
        self.names = [c.name for c in columns]
        self.copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        self.converters: list[Converter | None] = [_converter(dialect, c, copy=self.copy) for c in columns]
        quote = dialect.identifier_preparer.quote
        target = dialect.identifier_preparer.format_table(table)
        names = ", ".join(quote(n) for n in self.names)
        if self.copy:
            self.statement = f"COPY {target} ({names}) FROM STDIN"
        else:
            mark = "?" if dialect.paramstyle == "qmark" else "%s"
            self.statement = f"INSERT INTO {target} ({names}) VALUES ({', '.join([mark] * len(self.names))})"
        self._get = itemgetter(*self.names)

    def values(self, rows: Sequence[Mapping[str, Any]], memo: dict[Any, dict[Any, Any]]) -> list[tuple[Any, ...]]:
        if len(self.names) == 1:
            only = self.names[0]
            columns: list[Sequence[Any]] = [[row[only] for row in rows]]
        else:
            get = self._get
            columns = list(zip(*[get(row) for row in rows], strict=True))
        converted = [
            column if convert is None else _memoized(convert, column, memo.setdefault(convert, {}))
            if convert in _REPEATING
            else list(map(convert, column))
            for convert, column in zip(self.converters, columns, strict=True)
        ]
        return list(zip(*converted, strict=True))

    def write(self, conn: Connection, values: list[tuple[Any, ...]]) -> None:
        if not self.copy:
            conn.exec_driver_sql(self.statement, values)
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        try:
            with driver.cursor() as cursor, cursor.copy(self.statement) as copy:
                for row in values:
                    copy.write_row(row)
        except conn.dialect.loaded_dbapi.Error as error:
            raise sa_exc.DBAPIError.instance(
                self.statement, None, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from error


_PLANS: dict[tuple[int, str, str, str, tuple[str, ...]], _Plan | None] = {}


def _plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Plan | None:
    key = (id(table), dialect.name, dialect.driver, dialect.paramstyle, keys)
    if key not in _PLANS:
        _PLANS[key] = _build_plan(dialect, table, keys)
    return _PLANS[key]


def _build_plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Plan | None:
    if dialect.name not in ("sqlite", "postgresql"):
        return None
    if dialect.name == "postgresql" and dialect.driver != "psycopg":
        return None
    if len(set(keys)) != len(keys) or not set(keys) <= set(table.c.keys()):
        return None  # SQLAlchemy refuses names that are not columns; let it
    for column in table.columns:
        if column.key in keys:
            continue
        if column.default is not None or column.onupdate is not None:
            return None  # SQLAlchemy fills Python-side defaults; let it
    columns = [table.c[k] for k in keys]
    if any(c.key != c.name for c in columns):
        return None
    try:
        return _Plan(dialect, table, columns)
    except _UnsupportedError:
        return None


def _converter(dialect: Dialect, column: Column[Any], *, copy: bool) -> Converter | None:
    """The conversion SQLAlchemy applies to this column's values, or None when it passes them through.

    Raises ``_UnsupportedError`` for a type whose conversion is not reproduced here exactly.
    """
    kind = column.type.dialect_impl(dialect)
    if isinstance(kind, JSON):
        if kind.none_as_null:
            raise _UnsupportedError(f"{column.name}: JSON(none_as_null=True)")
        return _json_converter(dialect)
    if isinstance(kind, DateTime):
        if dialect.name != "sqlite":
            return _plain_datetime
        if getattr(kind, "_storage_format", None) != SQLITE_DATETIME._storage_format:
            raise _UnsupportedError(f"{column.name}: a DATETIME with its own storage format")
        return _sqlite_datetime
    if column.type._cached_bind_processor(dialect) is not None:
        raise _UnsupportedError(f"{column.name}: {column.type!r} converts its values")
    base = kind.impl_instance if isinstance(kind, TypeDecorator) else kind
    if copy and not isinstance(base, String | Integer | Boolean | Float):
        raise _UnsupportedError(f"{column.name}: {column.type!r} through COPY")
    return None


class _UnsupportedError(Exception):
    """A column type the fast path does not convert: the table goes through SQLAlchemy."""


def _json_converter(dialect: Dialect) -> Converter:
    serialize: Callable[[Any], str] | None = getattr(dialect, "_json_serializer", None)
    if serialize is None:  # SQLAlchemy's default (json.dumps) or the driver's own: not ours to copy
        raise _UnsupportedError("JSON without the engine's serializer")

    def convert(value: Any) -> str:
        if not isinstance(value, _JSON_VALUES):
            raise _FallbackError
        return serialize(value)

    return convert


_DAYS: dict[int, str] = {}
"""``YYYY-MM-DD `` by proleptic ordinal: the dates a process has formatted (a city's data spans a few thousand)."""
_DAYS_MAX = 20_000
_HOURS_MINUTES = [f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60)]
_TWO_DIGITS = [f"{number:02d}" for number in range(60)]


def _sqlite_datetime(value: Any) -> str | None:
    """What SQLAlchemy's SQLite ``DATETIME`` stores: the wall-clock fields, with microseconds.

    The same text as ``isoformat(" ", "microseconds")[:26]``, in pieces: the date from a table by ordinal,
    hours and minutes from a table of 1,440, the seconds from one of 60. An aware datetime's ``isoformat``
    formats its offset only for it to be cut off: 1.1 µs against 0.45, paid for every distinct time of a batch
    (observation times and retention deadlines are one a row)."""
    if value.__class__ is datetime:
        ordinal = value.toordinal()
        day = _DAYS.get(ordinal)
        if day is None:
            if len(_DAYS) >= _DAYS_MAX:
                _DAYS.clear()
            day = _DAYS[ordinal] = f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        micro = value.microsecond
        return (day + _HOURS_MINUTES[value.hour * 60 + value.minute] + _TWO_DIGITS[value.second]
                + (f".{micro:06d}" if micro else ".000000"))
    if value is None:
        return None
    raise _FallbackError


def _memoized(convert: Converter, column: Sequence[Any], known: dict[Any, Any]) -> list[Any]:
    """``convert`` over a column of datetimes, once per distinct value: a batch's times repeat (one
    ``stored_at``, one ``received_at`` per file, observations of the same hour), and formatting a
    datetime costs about thirty times a dictionary lookup. The key holds the zone too: equal instants
    in two zones have different wall-clock fields, which is what SQLite stores."""
    get = known.get
    out: list[Any] = []
    append = out.append
    for value in column:
        if value.__class__ is not datetime:
            append(convert(value))
            continue
        key = (value, value.tzinfo)
        result = get(key, _MISSING)
        if result is _MISSING:
            result = known[key] = convert(value)
        append(result)
    return out


_MISSING = object()


def _plain_datetime(value: Any) -> Any:
    if value is None or value.__class__ is datetime:
        return value
    raise _FallbackError


#: Converters whose columns hold few distinct values per batch (times): applied through ``_memoized``.
_REPEATING: frozenset[Converter] = frozenset({_sqlite_datetime})

__all__ = ["insert_rows"]
