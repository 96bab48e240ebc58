"""Data-quality suites (Great Expectations 1.x), run once per batch and entity type.

Great Expectations costs seconds to import and tens of milliseconds per validation run, so it is
imported lazily, its context and validation definitions are built once per process, and each run
covers a whole batch. The structural checks that must run per record (JSON Schema) live elsewhere;
the suites catch what structure lets through: implausible values, impossible positions.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from pathlib import Path
from typing import Any, cast

import orjson

from governance.errors import ConfigurationError
from governance.resources import data_folder

#: Expectations that pass null values by definition: on a column the batch never fills they cannot fail,
#: so they are skipped. Any other kind (``expect_column_values_to_not_be_null``) always runs.
NULL_IGNORING = frozenset({
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_match_regex",
})


@dataclass(frozen=True)
class Expectation:
    type: str
    kwargs: Mapping[str, Any]
    why: str

    @property
    def column(self) -> str | None:
        column = self.kwargs.get("column")
        return str(column) if column is not None else None

    def columns(self) -> list[str]:
        if "column" in self.kwargs:
            return [str(self.kwargs["column"])]
        return [str(c) for c in self.kwargs.get("column_list", [])]


@dataclass(frozen=True)
class QualitySuite:
    entity_type: str
    expectations: tuple[Expectation, ...]

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for expectation in self.expectations:
            for column in expectation.columns():
                seen.setdefault(column, None)
        return list(seen)


@dataclass(frozen=True)
class QualityFailure:
    """One row that failed one expectation."""

    row: int
    expectation: Expectation
    value: Any


def load_suites(folder: Path | None = None) -> dict[str, QualitySuite]:
    """Every suite under ``schemas/quality``, by entity type."""
    folder = folder or data_folder("schemas") / "quality"
    suites: dict[str, QualitySuite] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            document = orjson.loads(path.read_bytes())
            suite = QualitySuite(
                entity_type=str(document["entity_type"]),
                expectations=tuple(
                    Expectation(type=str(e["type"]), kwargs=dict(e["kwargs"]), why=str(e.get("why", "")))
                    for e in document["expectations"]
                ),
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"quality suite {path.name} is not valid: {exc}") from exc
        suites[suite.entity_type] = suite
    return suites


@cache
def default_suites() -> dict[str, QualitySuite]:
    return load_suites()


def frame_columns(entities: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The suite's columns for a batch, column by column: what :func:`flatten` gives row by row."""
    data: dict[str, list[Any]] = {}
    plain = all(e.__class__ is dict for e in entities)
    points: tuple[list[Any], list[Any]] | None = None
    for column in columns:
        if column in ("location_lon", "location_lat"):
            if points is None:  # both coordinates in one pass over the entities
                points = _coordinates(entities)
            data[column] = points[0 if column == "location_lon" else 1]
            continue
        # the common case at C speed: values looked up column-wise, then one check for nested ones
        values: list[Any] = (
            list(map(dict.get, cast("list[dict[str, Any]]", entities), repeat(column))) if plain
            else [e.get(column) for e in entities]
        )
        kinds = set(map(type, values))
        if any(issubclass(kind, dict | list) for kind in kinds):
            values = [None if isinstance(v, dict | list) else v for v in values]
        data[column] = values
    return data


def _coordinates(entities: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    """The longitudes and latitudes of entities' GeoJSON Points (None where there is none)."""
    lons: list[Any] = []
    lats: list[Any] = []
    for entity in entities:
        location = entity.get("location")
        if isinstance(location, dict) and location.get("type") == "Point":
            coords = location.get("coordinates")
            if isinstance(coords, list) and len(coords) >= 2:
                lons.append(coords[0])
                lats.append(coords[1])
                continue
        lons.append(None)
        lats.append(None)
    return lons, lats


def flatten(entity: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """The row of one entity for a suite: top-level scalars plus ``location_lon``/``location_lat``."""
    row: dict[str, Any] = {}
    for column in columns:
        if column in ("location_lon", "location_lat"):
            location = entity.get("location")
            coords = location.get("coordinates") if isinstance(location, dict) else None
            if isinstance(location, dict) and location.get("type") == "Point" and isinstance(coords, list):
                row[column] = coords[0 if column == "location_lon" else 1] if len(coords) >= 2 else None
            else:
                row[column] = None
            continue
        value = entity.get(column)
        row[column] = value if not isinstance(value, dict | list) else None
    return row


class QualityRunner:
    """Runs suites through Great Expectations; one instance per process, safe across threads."""

    def __init__(self, suites: Mapping[str, QualitySuite]) -> None:
        self._suites = dict(suites)
        self._lock = threading.Lock()
        self._context: Any = None
        self._definitions: dict[str, Any] = {}

    def suite_for(self, entity_type: str) -> QualitySuite | None:
        return self._suites.get(entity_type)

    def check(self, entity_type: str, entities: Sequence[Mapping[str, Any]]) -> list[QualityFailure]:
        """Validate a batch of entities of one type; return every failing (row, expectation)."""
        suite = self._suites.get(entity_type)
        if suite is None or not entities:
            return []
        import pandas as pd

        columns = suite.columns()
        frame = pd.DataFrame(frame_columns(entities, columns), columns=columns)
        # An expectation that ignores nulls, on a column no entity of the batch fills, cannot fail:
        # leave it out. Great Expectations' cost is per expectation and per run.
        empty = {c for c in columns if frame[c].isna().all()}
        active = tuple(
            i for i, e in enumerate(suite.expectations)
            if e.column is None or e.column not in empty or e.type not in NULL_IGNORING
        )
        if not active:
            return []
        with self._lock:
            definition = self._definition(suite, active)
            # the cheap result format first; the row-level details only for a batch that fails
            result = _validate(definition, frame, "BOOLEAN_ONLY")
            if not result.success:
                result = _validate(definition, frame, "COMPLETE")
        if result.success:
            return []
        failures: list[QualityFailure] = []
        checked = [suite.expectations[i] for i in active]
        for expectation, outcome in zip(checked, result.results, strict=True):
            if outcome.success:
                continue
            details = outcome.result or {}
            indices = details.get("unexpected_index_list")
            if indices is None:
                # an expectation about the batch as a whole: every row shares the failure
                failures.extend(QualityFailure(i, expectation, None) for i in range(len(entities)))
                continue
            values = details.get("unexpected_list") or [None] * len(indices)
            for index, value in zip(indices, values, strict=False):
                row = index if isinstance(index, int) else int(next(iter(dict(index).values())))
                failures.append(QualityFailure(row, expectation, value))
        return failures

    def _definition(self, suite: QualitySuite, active: tuple[int, ...]) -> Any:
        """The validation definition of the expectations ``active`` (indices) of ``suite``, built once."""
        full = len(active) == len(suite.expectations)
        key = suite.entity_type if full else f"{suite.entity_type}-{'.'.join(map(str, active))}"
        if key in self._definitions:
            return self._definitions[key]
        gx, gxe = _import_gx()
        if self._context is None:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self._context = gx.get_context(mode="ephemeral")
            self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
            self._datasource = self._context.data_sources.add_pandas("citygov")
            _freeze_heap()
        asset = self._datasource.add_dataframe_asset(key)
        batch = asset.add_batch_definition_whole_dataframe(f"{key}-batch")
        gx_suite = gx.ExpectationSuite(name=key)
        for expectation in (suite.expectations[i] for i in active):
            class_name = "".join(part.capitalize() for part in expectation.type.split("_"))
            cls = getattr(gxe, class_name, None)
            if cls is None:
                raise ConfigurationError(
                    f"quality suite {suite.entity_type}: unknown expectation {expectation.type!r}"
                )
            gx_suite.add_expectation(cls(**expectation.kwargs))
        gx_suite = self._context.suites.add(gx_suite)
        definition = self._context.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=gx_suite, name=f"{key}-quality")
        )
        self._definitions[key] = definition
        return definition


def _validate(definition: Any, frame: Any, result_format: str) -> Any:
    """Run a validation definition's suite over ``frame``: what ``definition.run`` does, without its
    bookkeeping — no freshness checks against the context's stores, and no copy of every result kept
    in the context's (in-memory) validation results store, which would grow with every batch."""
    from great_expectations.validator.v1_validator import Validator

    validator = Validator(
        batch_definition=definition.batch_definition,
        batch_parameters={"dataframe": frame},
        result_format={"result_format": result_format},
    )
    with configurations_remembered():
        return validator.validate_expectation_suite(definition.suite)


# --------------------------------------------------------------------------------------------------
# Great Expectations' per-run cost
# --------------------------------------------------------------------------------------------------

_RUN = threading.local()


@contextmanager
def configurations_remembered() -> Iterator[None]:
    """Within one validation run, build each expectation's ``configuration`` once.

    Great Expectations rebuilds an expectation's configuration (a pydantic ``.dict()`` of the whole
    model, then a new ``ExpectationConfiguration``) on every access, and reads it once per domain and
    success key while planning a run: ~45 rebuilds per expectation and run, about a third of its fixed
    cost of ~30 ms per suite and batch. Each run makes its expectation objects afresh from the suite's
    configurations and does not change them while it runs, so one configuration per object and run is
    what every access would have built. Outside a run (and on other threads) nothing is remembered.
    """
    _install_configuration_memo()
    outer = getattr(_RUN, "configurations", None)
    _RUN.configurations = {} if outer is None else outer
    try:
        yield
    finally:
        _RUN.configurations = outer


_ORIGINAL_CONFIGURATION: Any = None


def _install_configuration_memo() -> None:
    global _ORIGINAL_CONFIGURATION
    if _ORIGINAL_CONFIGURATION is not None:
        return
    from great_expectations.expectations.expectation import Expectation as GxExpectation

    descriptor: Any = vars(GxExpectation)["configuration"]
    original: Callable[[Any], Any] = descriptor.fget

    def configuration(self: Any) -> Any:
        memo: dict[int, tuple[Any, Any]] | None = getattr(_RUN, "configurations", None)
        if memo is None:
            return original(self)
        known = memo.get(id(self))
        if known is None or known[0] is not self:
            known = memo[id(self)] = (self, original(self))  # (holding the object: its id stays its own)
        return known[1]

    _ORIGINAL_CONFIGURATION = original
    GxExpectation.configuration = property(configuration)  # type: ignore[method-assign,assignment]


_FROZEN = False


def _freeze_heap() -> None:
    """Leave what the process has built so far (Great Expectations, pandas, the libraries) out of every
    later full garbage collection, once per process.

    Importing Great Expectations puts about a million objects on the heap that live as long as the
    process. Each full collection walks all of them again — about 0.15 s on the benchmark machine, a
    few times per 20,000 records, close to a quarter of the ingest time. ``gc.freeze`` moves them to a
    permanent generation; objects are still freed by reference counting as usual.
    """
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.collect()
        gc.freeze()


def _import_gx() -> tuple[Any, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    # its INFO lines (temporary docs sites, usage statistics) are noise in citygov's logs
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.WARNING)
    return gx, gxe
