"""The standard suite every registered adapter must pass (a new entry point joins automatically).

Each adapter ships a sample input under ``adapters/samples/<name>/`` and its reviewed expected output
in ``tests/adapters/golden/<name>.jsonl`` (see ``tests/adapters/make_golden.py`` for the layout). An
adapter that is registered but ships no module, sample or golden file fails here, by name.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import orjson
import pytest

from adapters.base import Adapter, AdapterConfig
from governance.catalog import default_catalog
from governance.errors import InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage
from tests.adapters.make_golden import (
    MAX_BYTES,
    RECEIVED_AT,
    adapter_names,
    build_adapter,
    load_adapter_class,
    read_golden,
    run_sample,
    sample_config,
    sample_input,
)
from tests.smart_data_models import MODEL_DIRS, official_errors

NAMES = adapter_names()
MODULES = {"lighting", "monitoring", "care"}
TRANSPORTS = {"mqtt", "http", "file"}
#: Project types with no official Smart Data Model (documented extensions, validated by our schema only).
EXTENSION_TYPES = {"ResidentObservation"}


@cache
def _output(name: str) -> list[dict[str, Any]]:
    # Through JSON, as stored: proves the output serialises and compares like the golden file.
    return [orjson.loads(orjson.dumps(row)) for row in run_sample(name)]


def _entities(name: str) -> list[dict[str, Any]]:
    return [entity for row in _output(name) for entity in row.get("entities", [])]


def test_every_declared_entry_point_is_covered() -> None:
    assert NAMES, "no adapter is registered under the citygov.adapters entry-point group"


@pytest.mark.parametrize("name", NAMES)
def test_declares_what_it_is(name: str) -> None:
    cls = load_adapter_class(name)
    assert isinstance(cls.version, str) and cls.version.strip()
    assert cls.module in MODULES
    assert isinstance(cls.source_format, str) and cls.source_format.strip()
    assert isinstance(cls.target_types, tuple) and cls.target_types
    assert all(isinstance(t, str) and t for t in cls.target_types)
    assert cls.transport in TRANSPORTS
    assert issubclass(cls.config_model, AdapterConfig)
    if cls.requires_config:
        assert sample_config(name) is not None, f"{name} requires configuration: ship samples/{name}/config.json"


@pytest.mark.parametrize("name", NAMES)
def test_sample_output_matches_golden(name: str) -> None:
    sample_input(name)  # a clear message when the sample is missing
    got = _output(name)
    expected = read_golden(name)
    assert [row["line"] for row in got] == [row["line"] for row in expected], "records and golden lines differ"
    for have, want in zip(got, expected, strict=True):
        assert have == want, f"{name}: line {want['line']} differs from the golden file"


@pytest.mark.parametrize("name", NAMES)
def test_sample_exercises_acceptance_and_rejection(name: str) -> None:
    rows = _output(name)
    accepted = [row for row in rows if "entities" in row]
    rejected = [row for row in rows if "rejected" in row]
    assert len(accepted) >= 5, f"{name}: the sample needs at least 5 good messages"
    assert rejected, f"{name}: the sample needs bad messages too"
    assert all(row["entities"] for row in accepted), "an accepted record must carry entities"


@pytest.mark.parametrize("name", NAMES)
def test_entities_are_well_formed(name: str) -> None:
    cls = load_adapter_class(name)
    entities = _entities(name)
    assert entities
    for entity in entities:
        kind = entity["type"]
        assert kind in cls.target_types, f"{name} produced {kind}, not declared in target_types"
        assert entity["id"].startswith(f"urn:ngsi-ld:{kind}:"), entity["id"]
        _assert_finite(entity, entity["id"])


@pytest.mark.parametrize("name", NAMES)
def test_entities_validate_against_official_models(name: str) -> None:
    for entity in _entities(name):
        kind = entity["type"]
        if kind not in MODEL_DIRS:
            assert kind in EXTENSION_TYPES, f"{kind} is neither an official model nor a documented extension"
            continue
        assert official_errors(entity) == [], f"{entity['id']} breaks the official {kind} schema"


@pytest.mark.parametrize("name", NAMES)
def test_entities_validate_against_project_schemas(name: str) -> None:
    catalog = default_catalog()
    for entity in _entities(name):
        assert entity["type"] in catalog, f"no project schema for {entity['type']}"
        catalog.get(entity["type"]).validate(entity)


@pytest.mark.parametrize("name", NAMES)
def test_garbled_payloads_are_quarantined_not_crashing(name: str) -> None:
    """Cut, emptied or corrupted versions of a good sample message: entities or InvalidRecordError only."""
    adapter = build_adapter(name)
    good = _first_good_message(adapter, name)
    payload = good.payload
    variants = [
        b"",
        b" ",
        b"null",
        b"[]",
        b"{}",
        b"0",
        payload[: len(payload) // 2],
        payload + b"\xff",
        b"\xff\xfe" + payload[2:],
        payload.replace(b"1", b"\x00"),
    ]
    for variant in variants:
        outcome = _parse_or_error(adapter, good._replace(payload=variant))
        if isinstance(outcome, InvalidRecordError):
            assert outcome.reason and outcome.detail
        else:
            assert all(isinstance(e, ParsedEntity) for e in outcome)


def _parse_or_error(adapter: Adapter, message: RawMessage) -> list[ParsedEntity] | InvalidRecordError:
    try:
        return adapter.parse(message)
    except InvalidRecordError as exc:  # anything else escapes and fails the test
        return exc


def _first_good_message(adapter: Adapter, name: str) -> RawMessage:
    for message in adapter.read(sample_input(name), received_at=RECEIVED_AT, max_bytes=MAX_BYTES):
        if message.defect is None:
            try:
                adapter.parse(message)
            except InvalidRecordError:
                continue
            return message
    raise AssertionError(f"{name}: no good message in the sample")


def _assert_finite(value: Any, where: str) -> None:
    if isinstance(value, float):
        assert math.isfinite(value), f"{where}: non-finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            _assert_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _assert_finite(item, where)
