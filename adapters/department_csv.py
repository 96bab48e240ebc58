"""CSV exports of city departments (noise surveys, weather stations), described by a mapping file.

The mapping says which column identifies the station, which columns give the time (one instant, or a
from/to period) and in which zone, where each station stands, and which column holds which property
in which unit. Files as departments write them are accepted: a UTF-8 BOM, Latin-1, ``;`` separators,
decimal commas, quoted fields, blank lines, headers that name a column differently.

Every data row becomes one record whose payload is the row itself (UTF-8) and whose context carries the
header line, so a quarantined row can be parsed again on its own. A header that lacks a mapped column
rejects every row with ``csv_columns``: nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from adapters.base import Adapter, AdapterConfig
from adapters.fields import LOCAL_ID, decode_text, describe
from adapters.units import (
    OBSERVED_TYPES,
    MeasureRule,
    ObservedType,
    geo_point,
    measure_rule,
    observation_period,
    parse_decimal,
)
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage, entity_urn
from governance.ingest.timeparse import localize, parse_instant, utc_iso, zone

_BOM = codecs.BOM_UTF8
#: Header layouts kept per adapter (a file has one header; a retry of old rows may bring a few more).
_LAYOUT_CACHE_SIZE = 32
#: Time cells already converted (rows of one period share them: every station reports the same hour).
_TIME_CACHE_SIZE = 4096
#: Station ids and measured cell texts kept converted, per adapter (each table emptied when full).
_ID_CACHE_SIZE = 4096
_VALUE_CACHE_SIZE = 4096
_SHOWN_COLUMNS = 25


class TimeColumns(AdapterConfig):
    """Where the time is: ``column`` (one instant; a list of columns is joined with a space, e.g. a
    date column and an hour column), or ``from`` and ``to`` (a period)."""

    column: str | list[str] | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    format: str | None = None
    """``strptime`` format; default ISO 8601."""
    zone: str | None = None
    """IANA zone of times written without an offset; without it such times are refused."""
    column_marks: Literal["start", "end"] | None = None
    """For a period built from one column and ``interval_minutes``: is that time its start or its end?"""

    def names(self) -> list[str]:
        if self.column is not None:
            return [self.column] if isinstance(self.column, str) else list(self.column)
        return [n for n in (self.from_, self.to) if n is not None]


class ColumnMapping(AdapterConfig):
    """One measured column: the property it fills and the unit it is written in."""

    property: str
    unit: str | None = None
    """UN/CEFACT code (``FAH``, ``P1``, ``2N``…); ``None`` means the schema's unit."""
    required: bool = True
    """A required column must be in the header and filled in every row; an optional one may be
    absent or empty (the property is then left out)."""


class LocationColumns(AdapterConfig):
    lon_column: str
    lat_column: str


class StationPlaces(AdapterConfig):
    stations: dict[str, tuple[float, float]]
    """Station id (as in ``id_column``) → [longitude, latitude]."""


class DepartmentCsvConfig(AdapterConfig):
    """The mapping file of one kind of department export."""

    entity_type: ObservedType
    id_column: str
    id_prefix: str = ""
    time: TimeColumns
    separator: str = ","
    decimal: Literal[".", ","] = "."
    encoding: str = "utf-8"
    quotechar: str = '"'
    columns: dict[str, ColumnMapping] = Field(min_length=1)
    header_aliases: dict[str, str] = Field(default_factory=dict)
    """Header as written → column name used in this mapping (``"LAeq (dB)": "LAeq"``)."""
    location: LocationColumns | StationPlaces
    interval_minutes: int | None = Field(default=None, gt=0, le=31 * 1440)
    null_markers: tuple[str, ...] = ()
    """Cell texts that mean "no value" in this export (``"-"``, ``"n/d"``): read as an empty cell."""

    @model_validator(mode="after")
    def _check(self) -> DepartmentCsvConfig:
        if len(self.separator) != 1 or len(self.quotechar) != 1:
            raise ValueError("separator and quotechar must be one character each")
        if self.separator in (self.quotechar, "\n", "\r") or (self.decimal == "," and self.separator == ","):
            raise ValueError(f"separator {self.separator!r} clashes with the quote, a newline or the decimal mark")
        try:
            codec = codecs.lookup(self.encoding).name
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        if codec.startswith(("utf-16", "utf-32")):
            raise ValueError(f"encoding {self.encoding!r} is not ASCII-compatible; export the file as UTF-8")
        if self.time.zone is not None:
            try:
                zone(self.time.zone)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        if self.id_prefix and not LOCAL_ID.fullmatch(self.id_prefix):
            raise ValueError("id_prefix must be letters, digits, '.', '_' or '-'")
        self._check_time()
        seen: dict[str, str] = {}
        for column, mapping in self.columns.items():
            try:
                measure_rule(self.entity_type, mapping.property, mapping.unit)
            except ValueError as exc:
                raise ValueError(f"column {column!r}: {exc}") from None
            if mapping.property in seen:
                raise ValueError(f"columns {seen[mapping.property]!r} and {column!r} both fill {mapping.property!r}")
            seen[mapping.property] = column
        known = set(self.used_columns()) | set(self.columns)
        for alias, target in self.header_aliases.items():
            if target not in known:
                raise ValueError(f"header alias {alias!r} points to {target!r}, which the mapping does not use")
        return self

    def _check_time(self) -> None:
        t = self.time
        if t.column is not None and (t.from_ is not None or t.to is not None):
            raise ValueError("time: give either 'column' or 'from' and 'to', not both")
        if t.column is None and (t.from_ is None or t.to is None):
            raise ValueError("time: give 'column', or both 'from' and 'to'")
        if isinstance(t.column, list) and not t.column:
            raise ValueError("time.column: the list of columns is empty")
        if self.entity_type == "NoiseLevelObserved":
            if t.column is not None and (self.interval_minutes is None or t.column_marks is None):
                raise ValueError(
                    "NoiseLevelObserved covers a period: with a single time column, set interval_minutes "
                    "and time.column_marks ('start' or 'end' of the period)"
                )
        elif t.column is None:
            raise ValueError(f"{self.entity_type} is observed at an instant: use time.column, not from/to")

    def used_columns(self) -> list[str]:
        """Every column the mapping reads besides the measured ones."""
        names = [self.id_column, *self.time.names()]
        if isinstance(self.location, LocationColumns):
            names += [self.location.lon_column, self.location.lat_column]
        return names


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a header line means under the mapping: the position of each column, or why it cannot work."""

    width: int
    index: dict[str, int]
    problem: InvalidRecordError | None = None
    measures: tuple[tuple[str, int, MeasureRule, bool], ...] = ()
    """The measured columns the header has, in mapping order: (column, position, rule, required)."""


class DepartmentCsvAdapter(Adapter):
    """Rows of a department CSV export → one observed entity per row."""

    name = "department-csv"
    version = "1.0.0"
    module = "monitoring"
    source_format = "CSV export (header + one row per station and period), described by a mapping file"
    target_types = OBSERVED_TYPES
    transport = "file"
    config_model = DepartmentCsvConfig
    requires_config = True

    def __init__(self, config: AdapterConfig | None = None, *, config_ref: str | None = None) -> None:
        super().__init__(config, config_ref=config_ref)
        cfg = self.config
        assert isinstance(cfg, DepartmentCsvConfig)
        self.cfg = cfg
        self._rules: dict[str, MeasureRule] = {
            column: measure_rule(cfg.entity_type, m.property, m.unit) for column, m in cfg.columns.items()
        }
        self._zone: ZoneInfo | None = zone(cfg.time.zone) if cfg.time.zone else None
        self._layouts: dict[str, _Layout] = {}
        self._time_names = cfg.time.names()
        self._times: dict[tuple[str, ...], dict[str, str]] = {}
        # Station cell → entity id, and per measured column cell text → value in the schema's unit.
        self._ids: dict[str, str] = {}
        self._values: dict[str, dict[str, float | int]] = {column: {} for column in self._rules}

    # -- reading ----------------------------------------------------------------------------------

    def read(self, path: Path, *, received_at: datetime, max_bytes: int) -> Iterator[RawMessage]:
        """Stream the rows: each becomes a message carrying its header, decoded to UTF-8."""
        source = str(path)
        encoding = self.cfg.encoding
        utf8 = codecs.lookup(encoding).name == "utf-8"  # then the row's bytes already are its UTF-8
        header: str | None = None
        header_problem: InvalidRecordError | None = None
        with path.open("rb") as handle:
            for number, raw, truncated in csv_rows(handle, max_bytes, self.cfg.quotechar):
                if header is None:
                    try:
                        header = raw.decode(encoding)
                    except UnicodeDecodeError as exc:
                        header = raw.decode(encoding, "replace")
                        header_problem = InvalidRecordError(
                            "csv_header",
                            f"the header (line {number}) is not valid {encoding} at byte {exc.start}; "
                            "check the mapping's encoding",
                        )
                    continue
                context = {"line": number, "header": header, "file": source}
                defect = header_problem
                payload = raw
                if truncated:
                    context["truncated"] = True
                    defect = InvalidRecordError(
                        "payload_too_large", f"row at line {number} is longer than {max_bytes} bytes; its start is kept"
                    )
                elif defect is None and not utf8:  # (UTF-8 rows are checked by parse: not_utf8)
                    try:
                        payload = raw.decode(encoding).encode("utf-8")
                    except UnicodeDecodeError as exc:
                        defect = InvalidRecordError(
                            "bad_encoding",
                            f"row at line {number} is not valid {encoding} (first bad byte at offset {exc.start})",
                        )
                yield RawMessage(
                    payload=payload,
                    source=f"{source}:{number}",
                    received_at=received_at,
                    context=context,
                    defect=defect,
                )

    # -- parsing ----------------------------------------------------------------------------------

    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        header = message.context.get("header")
        if not isinstance(header, str):
            raise InvalidRecordError(
                "csv_header", "the record carries no header line (context 'header'); it cannot be read alone"
            )
        layout = self._layout(header)
        if layout.problem is not None:
            raise layout.problem
        cfg = self.cfg
        text = decode_text(message.payload)
        fields = _split(text, cfg.separator, cfg.quotechar)
        if len(fields) != layout.width:
            raise InvalidRecordError(
                "csv_field_count", f"the row has {len(fields)} fields, the header has {layout.width}"
            )

        nulls = cfg.null_markers

        def cell(column: str) -> str:
            value = fields[layout.index[column]].strip()
            return "" if value in nulls else value

        station = cell(cfg.id_column)
        entity_id = self._ids.get(station)
        if entity_id is None:
            entity_id = self._entity_id(station)
        data: dict[str, Any] = {"id": entity_id, "type": cfg.entity_type}
        data.update(self._time(cell))
        data["location"] = self._location(cell, station)
        measured = 0
        for column, position, rule, required in layout.measures:  # (optional columns the header lacks: left out)
            value = fields[position].strip()
            if not value or value in nulls:
                if required:
                    raise InvalidRecordError("missing_field", f"column '{column}' is empty", field=column)
                continue
            seen = self._values[column]
            number = seen.get(value)
            if number is None:  # the same readings come again and again: each text is converted once
                number = rule.apply(parse_decimal(value, field=column, decimal=cfg.decimal), field=column)
                if len(seen) >= _VALUE_CACHE_SIZE:
                    seen.clear()
                seen[value] = number
            data[rule.prop] = number
            measured += 1
        if not measured:
            raise InvalidRecordError("missing_field", "the row has no value in any measured column")
        return [ParsedEntity(data)]

    def _entity_id(self, station: str) -> str:
        """The entity id of a station cell, or why the cell cannot name one; valid ones are remembered."""
        cfg = self.cfg
        if not station:
            raise InvalidRecordError("missing_field", f"column '{cfg.id_column}' is empty", field=cfg.id_column)
        local = cfg.id_prefix + station
        if not LOCAL_ID.fullmatch(local):
            raise InvalidRecordError(
                "invalid_id",
                f"column '{cfg.id_column}' is {describe(station)}: an id must be letters, digits, '.', '_' or '-'",
                field=cfg.id_column,
            )
        entity_id = entity_urn(cfg.entity_type, local)
        if len(self._ids) >= _ID_CACHE_SIZE:
            self._ids.clear()
        self._ids[station] = entity_id
        return entity_id

    def _layout(self, header: str) -> _Layout:
        layout = self._layouts.get(header)
        if layout is None:
            layout = self._make_layout(header)
            if len(self._layouts) >= _LAYOUT_CACHE_SIZE:
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[header] = layout
        return layout

    def _make_layout(self, header: str) -> _Layout:
        cfg = self.cfg
        try:
            names = [n.strip() for n in _split(header.removeprefix("\ufeff"), cfg.separator, cfg.quotechar)]
        except InvalidRecordError as exc:
            return _Layout(0, {}, InvalidRecordError("csv_columns", f"the header line cannot be read: {exc.detail}"))
        index: dict[str, int] = {}
        written: dict[str, str] = {}
        for position, name in enumerate(names):
            canonical = cfg.header_aliases.get(name, name)
            if canonical in index:
                return _Layout(
                    len(names),
                    {},
                    InvalidRecordError(
                        "csv_columns",
                        f"column '{canonical}' appears twice in the header (as '{written[canonical][:40]}' "
                        f"and '{name[:40]}')",
                        field=canonical,
                    ),
                )
            index[canonical] = position
            written[canonical] = name
        required = cfg.used_columns() + [c for c, m in cfg.columns.items() if m.required]
        missing = [c for c in dict.fromkeys(required) if c not in index]
        if missing:
            shown = ", ".join(f"'{n[:40]}'" for n in names[:_SHOWN_COLUMNS])
            more = f" and {len(names) - _SHOWN_COLUMNS} more" if len(names) > _SHOWN_COLUMNS else ""
            return _Layout(
                len(names),
                index,
                InvalidRecordError(
                    "csv_columns",
                    f"the header lacks mapped column(s) {', '.join(repr(m) for m in missing)}; it has {shown}{more} "
                    f"(separator {cfg.separator!r}; add a header_alias if a column is named differently)",
                    field=missing[0],
                ),
            )
        measures = tuple(
            (column, index[column], rule, cfg.columns[column].required)
            for column, rule in self._rules.items()
            if column in index
        )
        return _Layout(len(names), index, measures=measures)

    def _time(self, cell: Any) -> dict[str, str]:
        """The time properties of a row. Converting them (``strptime``, zone, formatting) is a pure
        function of the row's time cells, so each distinct set of cells is converted once. The dict
        returned is the memoized one: copy from it, never change it."""
        texts = tuple([cell(c) for c in self._time_names])
        known = self._times.get(texts)
        if known is None:
            known = self._convert_time(dict(zip(self._time_names, texts, strict=True)))
            if len(self._times) >= _TIME_CACHE_SIZE:
                self._times.clear()
            self._times[texts] = known
        return known

    def _convert_time(self, cells: dict[str, str]) -> dict[str, str]:
        cell = cells.__getitem__
        cfg = self.cfg
        t = cfg.time
        if t.column is not None:
            label = t.column if isinstance(t.column, str) else "+".join(t.column)
            moment = self._instant(" ".join(cell(c) for c in t.names()), label)
            if cfg.entity_type != "NoiseLevelObserved":
                return {"dateObserved": utc_iso(moment)}
            assert cfg.interval_minutes is not None
            span = timedelta(minutes=cfg.interval_minutes)
            start, end = (moment, moment + span) if t.column_marks == "start" else (moment - span, moment)
        else:
            assert t.from_ is not None and t.to is not None
            start = self._instant(cell(t.from_), t.from_)
            end = self._instant(cell(t.to), t.to)
            if end <= start:
                raise InvalidRecordError(
                    "invalid_interval", f"'{t.to}' is not after '{t.from_}' in this row", field=t.to
                )
            if cfg.interval_minutes is not None and end - start != timedelta(minutes=cfg.interval_minutes):
                raise InvalidRecordError(
                    "invalid_interval",
                    f"'{t.from_}'..'{t.to}' spans {(end - start).total_seconds() / 60:g} minutes, "
                    f"not the {cfg.interval_minutes} of the mapping",
                    field=t.to,
                )
        return observation_period(start, end)

    def _instant(self, text: str, column: str) -> datetime:
        fmt = self.cfg.time.format
        if not text.strip():
            raise InvalidRecordError("missing_field", f"column '{column}' is empty", field=column)
        if fmt is None:
            return parse_instant(text, field=column, zone=self._zone)
        try:
            parsed = datetime.strptime(text, fmt)  # naive unless the format has %z; the zone comes below
        except ValueError:
            raise InvalidRecordError(
                "invalid_timestamp",
                f"column '{column}' is {describe(text)}, which does not match the format {fmt!r}",
                field=column,
            ) from None
        if parsed.tzinfo is not None:
            return parse_instant(parsed.isoformat(), field=column, zone=None)
        if self._zone is None:
            raise InvalidRecordError(
                "timestamp_without_zone",
                f"column '{column}' has no UTC offset ({text[:40]!r}) and the mapping sets no time.zone",
                field=column,
            )
        return localize(parsed, self._zone, field=column, raw=text)

    def _location(self, cell: Any, station: str) -> dict[str, Any]:
        loc = self.cfg.location
        if isinstance(loc, StationPlaces):
            place = loc.stations.get(station)
            if place is None:
                raise InvalidRecordError(
                    "unknown_station",
                    f"station {station[:40]!r} has no place in the mapping's location.stations",
                    field=self.cfg.id_column,
                )
            return geo_point(place[0], place[1], where="location")
        lon = parse_decimal(cell(loc.lon_column), field=loc.lon_column, decimal=self.cfg.decimal)
        lat = parse_decimal(cell(loc.lat_column), field=loc.lat_column, decimal=self.cfg.decimal)
        try:
            return geo_point(lon, lat, where=f"columns '{loc.lon_column}', '{loc.lat_column}'")
        except ValueError as exc:
            raise InvalidRecordError("out_of_range", str(exc), field=loc.lon_column) from None


def _split(text: str, separator: str, quotechar: str) -> list[str]:
    """The fields of one CSV row (which may span lines inside quotes)."""
    if text and quotechar not in text and "\r" not in text and "\n" not in text and "\0" not in text:
        return text.split(separator)  # what the csv module makes of a row without quotes or line breaks
    try:
        return next(csv.reader([text], delimiter=separator, quotechar=quotechar, strict=True), [])
    except csv.Error as exc:
        raise InvalidRecordError("csv_syntax", f"the row is not valid CSV ({exc})") from None


def csv_rows(handle: BinaryIO, limit: int, quotechar: str = '"') -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(first line number, row bytes, truncated)`` for each non-blank CSV row.

    Reads one physical line at a time (memory stays flat); a row whose quotes are still open at the
    end of a line continues on the next one. A UTF-8 BOM at the start of the file is dropped. A row
    longer than ``limit`` is cut, flagged, and the rest of it skipped.
    """
    quote = quotechar.encode("ascii")
    number = 0
    first = True
    pending: bytearray | None = None
    start = 0
    open_quotes = False
    while True:
        line = handle.readline(limit + 1)
        if not line:
            break
        number += 1
        if first:
            line = line.removeprefix(_BOM)
            first = False
        cut = len(line) > limit and not line.endswith(b"\n")
        if cut:
            while True:  # skip the rest of the over-long line
                rest = handle.readline(1 << 16)
                if not rest or rest.endswith(b"\n"):
                    break
        line = line.rstrip(b"\r\n")
        odd = line.count(quote) % 2 == 1
        if pending is None:
            if not cut and not odd:  # the usual case: one whole row on one line
                if line.strip():
                    yield number, line, False
                continue
            if not line.strip() and not cut:
                continue
            pending, start, open_quotes = bytearray(line), number, False
        else:
            pending += b"\n" + line
        if cut or len(pending) > limit:
            yield start, bytes(pending[:limit]), True
            pending = None
            continue
        open_quotes ^= odd
        if not open_quotes:
            yield start, bytes(pending), False
            pending = None
    if pending is not None:
        yield start, bytes(pending), False  # unterminated quote: the parser names it
