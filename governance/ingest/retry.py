"""Retrying quarantined records after a provisioning or mapping file has been fixed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import Adapter, adapter_class
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.batch import IngestReport, Record
from governance.ingest.message import RawMessage
from governance.ingest.pipeline import Pipeline
from governance.ingest.sources import unwrap_capture_line
from governance.store import quarantine

if TYPE_CHECKING:
    from governance.protect.quarantine import QuarantineVault


def message_of(row: dict[str, Any], vault: QuarantineVault | None = None) -> RawMessage:
    """Rebuild the original message from its quarantine row (a sealed payload is opened with ``vault``)."""
    context = dict(row.get("context") or {})
    if row.get("sealed"):
        if vault is None:
            raise ConfigurationError(
                f"quarantined record #{row.get('pk')} is sealed (personal data); retry it through the governed "
                "pipeline, which holds the quarantine key"
            )
        row = vault.open_row(row)
    if row.get("payload_truncated") and not row["payload"] and row["payload_size"]:
        return RawMessage(
            payload=b"",
            source=row["source"],
            received_at=row["received_at"],
            topic=row["topic"],
            context=context,
            defect=InvalidRecordError(
                "payload_discarded",
                "the payload was not kept (personal data refused for want of a legal basis); "
                "the source must send it again once a legal basis exists",
            ),
        )
    if row.get("payload_truncated"):
        return RawMessage(
            payload=row["payload"],
            source=row["source"],
            received_at=row["received_at"],
            topic=row["topic"],
            context=context,
            defect=InvalidRecordError(
                "payload_too_large",
                f"only the first {len(row['payload'])} of {row['payload_size']} bytes were kept; "
                "resend the message from its source",
            ),
        )
    if context.get("envelope") is False:
        return unwrap_capture_line(
            row["payload"], where=row["source"], number=int(context.get("line", 0)),
            received_at=row["received_at"],
        )
    return RawMessage(
        payload=row["payload"],
        source=row["source"],
        received_at=row["received_at"],
        topic=row["topic"],
        context=context,
    )


def retry(pipeline: Pipeline, rows: list[dict[str, Any]], *, config: Path | None = None) -> IngestReport:
    """Re-run the pipeline on quarantined rows; fixed ones are stored and marked resolved.

    Each row is retried with its adapter and the configuration file it was ingested with (read
    again now, so fixes apply), unless ``config`` names another file.
    """
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] != "open":
            continue
        groups[(row["adapter"], str(config) if config else row["config_ref"])].append(row)
    total = IngestReport()
    for (name, config_ref), members in groups.items():
        adapter: Adapter = adapter_class(name).from_config_file(Path(config_ref) if config_ref else None)
        records = [Record(message_of(r, pipeline.vault), r["fingerprint"], retry_of=int(r["pk"])) for r in members]
        total.add(pipeline.run_batch(adapter, records))
    return total


def open_rows(pipeline: Pipeline, where: quarantine.QuarantineFilter) -> list[dict[str, Any]]:
    return quarantine.list_quarantined(pipeline.engine, where)
