"""Hot statements run straight on the driver's cursor, with SQLAlchemy's own type conversions.

A statement a request runs every time (the key lookup, the replay claim, the agreements register, the rows, the
audit log's append) is a Core statement compiled **once per dialect**; each run then binds its parameters through
the column types' own bind processors, executes on the DBAPI cursor of the caller's connection (inside its
transaction, if any) and converts each row's values with the types' result processors (``execute`` and
``execute_many`` for statements that return nothing: the driver's ``executemany`` for several rows). What
SQLAlchemy's ``Connection.execute`` adds on top — cache-key generation, an execution context, a result object,
event dispatch — costs more than the statement itself on SQLite (about 13 µs of 20 µs for a one-row primary-key
read), for nothing here: the SQL, the bound values and the Python values are exactly those ``Connection.execute``
would give. Driver errors are raised as SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` subclasses), and a connection
the driver reports lost is invalidated, as ``Connection.execute`` does. (SQLAlchemy's ``before_cursor_execute``
events do not see these statements; its ``begin``/``commit``/``rollback`` events do, as ever.)
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Select

Processor = Callable[[Any], Any] | None


class DriverStatement:
    """One Core statement, compiled for each dialect it runs on (see the module docstring)."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()
        """By the engine's dialect object: its JSON serializer and deserializer are the engine's own."""
        self._lock = threading.Lock()

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect)
        if found is None:
            found = _Compiled(self.statement, dialect)
            with self._lock:
                self._compiled[dialect] = found
        return found

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row, each value converted as ``Connection.execute`` would."""
        return self.compiled(conn.dialect).run(conn, params)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Run a statement that returns nothing (an INSERT, an UPDATE) once, in ``conn``'s transaction."""
        self.compiled(conn.dialect).run_many(conn, [params])

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement that returns nothing once per parameter set in ``rows`` (the driver's
        ``executemany``), each value bound as ``Connection.execute(statement, rows)`` would."""
        if rows:
            self.compiled(conn.dialect).run_many(conn, rows)


class _Compiled:
    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self.positional = bool(dialect.positional)
        binds = compiled.binds
        # the parameters the SQL names (an UPDATE's or INSERT's own column binds are listed in ``binds`` too)
        names = list(compiled.positiontup or []) if self.positional else list(dict.fromkeys(
            compiled.bind_names.values()))
        self.names = names
        self.defaults = {name: binds[name].value for name in names if binds[name].value is not None}
        self.binders: list[tuple[str, Processor]] = [
            (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]
        # a SELECT's columns, or what an INSERT/UPDATE … RETURNING returns
        columns = list(statement.selected_columns if isinstance(statement, Select)
                       else getattr(statement, "exported_columns", ()))
        readers = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self.readers: list[tuple[int, Callable[[Any], Any]]] = [
            (index, reader) for index, reader in enumerate(readers) if reader is not None]
        """The columns whose driver values need converting (JSON text on SQLite, its datetimes…), by position."""

    def bind(self, params: Mapping[str, Any]) -> Any:
        """The driver's parameters for ``params``: a list in SQL order (positional drivers) or a dict."""
        defaults = self.defaults
        values: list[Any] = []
        for name, binder in self.binders:  # in SQL order
            value = params[name] if name in params else defaults.get(name)
            values.append(binder(value) if binder is not None and value is not None else value)
        return values if self.positional else dict(zip(self.names, values, strict=True))

    def run(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        bound = self.bind(params)
        fairy = conn.connection  # the pooled connection (begins nothing: the driver does, as for execute())
        dbapi = fairy.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(self.sql, bound)
            raw = cursor.fetchall() if cursor.description is not None else []
        except conn.dialect.loaded_dbapi.Error as exc:
            raise self._failed(conn, dbapi, cursor, bound, exc) from exc
        finally:
            cursor.close()
        readers = self.readers
        if not readers:
            return [tuple(row) for row in raw]
        out: list[tuple[Any, ...]] = []
        for row in raw:
            converted = list(row)
            for index, reader in readers:
                value = converted[index]
                if value is not None:
                    converted[index] = reader(value)
            out.append(tuple(converted))
        return out

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        bound = [self.bind(params) for params in rows]
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            if len(bound) == 1:
                cursor.execute(self.sql, bound[0])
            else:
                cursor.executemany(self.sql, bound)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise self._failed(conn, dbapi, cursor, bound, exc, many=True) from exc
        finally:
            cursor.close()

    def _failed(self, conn: Connection, dbapi: Any, cursor: Any, bound: Any, exc: Any, *,
                many: bool = False) -> BaseException:
        return driver_error(conn, dbapi, cursor, self.sql, bound, exc, many=many)


def driver_error(conn: Connection, dbapi: Any, cursor: Any, sql: str, bound: Any, exc: Any, *,
                 many: bool = False) -> BaseException:
    """A driver error raised by ``sql`` on ``conn``'s DBAPI connection, as ``Connection.execute`` raises it
    (a ``sqlalchemy.exc.DBAPIError`` subclass); a connection the driver reports lost is invalidated."""
    lost = conn.dialect.is_disconnect(exc, dbapi, cursor)
    if lost:
        conn.invalidate(exc)
    error = DBAPIError.instance(sql, bound, exc, conn.dialect.loaded_dbapi.Error,
                                connection_invalidated=lost, dialect=conn.dialect, ismulti=many)
    assert isinstance(error, BaseException)
    return error
