"""Great Expectations runs with each expectation's configuration built once per run (the quality step's
``configurations_remembered``) give exactly the results of runs that rebuild it on every access."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import pytest

from governance.ingest.quality import (
    QualityRunner,
    configurations_remembered,
    default_suites,
    frame_columns,
)
from tests.adapters.make_golden import adapter_names, read_golden


def _entities_by_type() -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for name in adapter_names():
        for row in read_golden(name):
            for entity in row.get("entities", []):
                by_type.setdefault(entity["type"], []).append(entity)
    return by_type


def _spoiled(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other entity with implausible values: huge and negative numbers, unknown strings."""
    out = []
    for index, entity in enumerate(entities * 3):
        entity = copy.deepcopy(entity)
        if index % 2:
            for key, value in list(entity.items()):
                if key in ("id", "type"):
                    continue
                if isinstance(value, bool):
                    continue
                if isinstance(value, int | float):
                    entity[key] = -1e9 if index % 4 == 1 else 1e9
                elif isinstance(value, str) and not key.startswith("date"):
                    entity[key] = "no-such-value"
                elif isinstance(value, dict) and value.get("type") == "Point":
                    entity[key] = {"type": "Point", "coordinates": [400.0, -200.0]}
        out.append(entity)
    return out


def _outcome(result: Any) -> list[tuple[Any, ...]]:
    return [
        (
            r.expectation_config.type,
            sorted(r.expectation_config.kwargs.items(), key=str),
            r.success,
            (r.result or {}).get("unexpected_index_list"),
            (r.result or {}).get("unexpected_list"),
            (r.result or {}).get("element_count"),
        )
        for r in result.results
    ]


def _run(runner: QualityRunner, entity_type: str, frame: pd.DataFrame, result_format: str,
         *, remembered: bool) -> Any:
    from great_expectations.validator.v1_validator import Validator

    suite = runner.suite_for(entity_type)
    assert suite is not None
    definition = runner._definition(suite, tuple(range(len(suite.expectations))))
    validator = Validator(
        batch_definition=definition.batch_definition,
        batch_parameters={"dataframe": frame},
        result_format={"result_format": result_format},
    )
    if not remembered:
        return validator.validate_expectation_suite(definition.suite)
    with configurations_remembered():
        return validator.validate_expectation_suite(definition.suite)


@pytest.fixture(scope="module")
def runner() -> QualityRunner:
    return QualityRunner(default_suites())


@pytest.mark.parametrize("entity_type", sorted(_entities_by_type()))
@pytest.mark.parametrize("result_format", ["BOOLEAN_ONLY", "COMPLETE"])
def test_remembered_configurations_give_the_same_results(
    runner: QualityRunner, entity_type: str, result_format: str
) -> None:
    suite = runner.suite_for(entity_type)
    assert suite is not None
    entities = _spoiled(_entities_by_type()[entity_type])
    columns = suite.columns()
    frame = pd.DataFrame(frame_columns(entities, columns), columns=columns)
    plain = _run(runner, entity_type, frame, result_format, remembered=False)
    remembered = _run(runner, entity_type, frame, result_format, remembered=True)
    assert remembered.success == plain.success
    assert _outcome(remembered) == _outcome(plain)


def test_the_spoiled_batches_do_fail(runner: QualityRunner) -> None:
    """The comparison above compares failing runs too, not only passing ones."""
    failed = []
    for entity_type, entities in _entities_by_type().items():
        if runner.check(entity_type, _spoiled(entities)):
            failed.append(entity_type)
    assert len(failed) >= 5, failed


def test_nothing_is_remembered_outside_a_run(runner: QualityRunner) -> None:
    import great_expectations.expectations as gxe

    expectation = gxe.ExpectColumnValuesToNotBeNull(column="x")
    with configurations_remembered():
        assert expectation.configuration is expectation.configuration
    first, second = expectation.configuration, expectation.configuration
    assert first is not second
    assert first == second
