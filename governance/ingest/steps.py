"""The named steps of the collection pipeline. Each works on a whole batch and touches no database.

Later stages (collection policy, protection) add steps of the same shape between quality and store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from adapters.base import Adapter
from governance.catalog import SchemaCatalog
from governance.errors import InvalidRecordError
from governance.ingest.batch import Batch, Record, Rejection
from governance.ingest.message import ParsedEntity
from governance.ingest.quality import QualityRunner

log = logging.getLogger(__name__)


class Step(Protocol):
    """One stage of the pipeline: marks records rejected, or transforms their entities."""

    name: str

    def run(self, adapter: Adapter, batch: Batch) -> None: ...


class ParseStep:
    """Raw message → entities, through the adapter. Nothing an adapter raises escapes."""

    name = "parse"

    def __init__(self, max_payload_bytes: int) -> None:
        self.max_payload_bytes = max_payload_bytes

    def run(self, adapter: Adapter, batch: Batch) -> None:
        for record in batch.active():
            message = record.message
            if message.defect is not None:
                record.reject(Rejection.from_error("read", message.defect))
                continue
            if len(message.payload) > self.max_payload_bytes:
                record.reject(
                    Rejection(
                        "read",
                        "payload_too_large",
                        f"payload is {len(message.payload)} bytes, over the limit of "
                        f"{self.max_payload_bytes} (CITYGOV_MAX_PAYLOAD_BYTES)",
                    )
                )
                continue
            try:
                entities = adapter.parse(message)
            except InvalidRecordError as exc:
                record.reject(Rejection.from_error(self.name, exc))
                continue
            except Exception as exc:  # a bug in an adapter must not stop the feed
                log.exception("adapter %s failed on %s", adapter.name, message.source)
                record.reject(
                    Rejection(
                        self.name,
                        "adapter_error",
                        f"adapter {adapter.name} {adapter.version} failed ({type(exc).__name__}); "
                        "report it with this record",
                    )
                )
                continue
            if not entities:
                record.reject(Rejection(self.name, "no_entities", "the message carried nothing to store"))
                continue
            record.entities = entities


class ValidateStep:
    """Every entity against its standard schema (compiled validator, per record)."""

    name = "validate"

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog

    def run(self, adapter: Adapter, batch: Batch) -> None:
        validators: dict[str, Callable[[dict[str, Any]], None]] = {}  # per batch: types repeat
        for record in batch.active():
            try:
                for entity in record.entities:
                    data = entity.data
                    entity_type = data["type"]
                    if entity_type.__class__ is not str:
                        entity_type = str(entity_type)
                    validate = validators.get(entity_type)
                    if validate is None:
                        if entity_type not in adapter.target_types:
                            raise InvalidRecordError(
                                "unexpected_entity_type",
                                f"adapter {adapter.name} produced {entity_type!r}, which it does not declare",
                            )
                        validate = validators[entity_type] = self.catalog.get(entity_type).validate
                    validate(data)
            except InvalidRecordError as exc:
                record.reject(Rejection.from_error(self.name, exc))


class QualityStep:
    """The data-quality suites, once per batch and entity type."""

    name = "quality"

    def __init__(self, runner: QualityRunner) -> None:
        self.runner = runner

    def run(self, adapter: Adapter, batch: Batch) -> None:
        by_type: dict[str, list[tuple[Record, ParsedEntity]]] = {}
        checked: dict[str, list[tuple[Record, ParsedEntity]] | None] = {}  # type → its members, None: no suite
        for record in batch.active():
            for entity in record.entities:
                entity_type = entity.entity_type
                members = checked.get(entity_type, _UNSEEN)
                if members is _UNSEEN:
                    members = checked[entity_type] = (
                        None if self.runner.suite_for(entity_type) is None else by_type.setdefault(entity_type, [])
                    )
                if members is not None:
                    members.append((record, entity))
        for entity_type, members in by_type.items():
            # records rejected while checking an earlier type are still checked here, so that every
            # failing entity is judged the same way whatever order the types come in
            failures = self.runner.check(entity_type, [entity.data for _, entity in members])
            for failure in failures:
                record, entity = members[failure.row]
                if not record.active:
                    continue  # the first failure found is the reason recorded
                column = failure.expectation.column or ",".join(failure.expectation.columns())
                value = f"={failure.value!r}" if failure.value is not None else ""
                why = f" ({failure.expectation.why})" if failure.expectation.why else ""
                record.reject(
                    Rejection(
                        self.name,
                        "quality_check",
                        f"{entity_type} {entity.entity_id}: {column}{value} fails "
                        f"{failure.expectation.type}{why}",
                        field=column,
                    )
                )


_UNSEEN: Any = object()
