"""``citygov ingest``, ``listen``, ``entities`` and ``adapters``: data in, data out."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from adapters.base import adapter_class, registered_adapters
from governance.catalog import default_catalog
from governance.cli.common import (
    EXIT_QUARANTINED,
    console,
    emit_json,
    governed_pipeline,
    handle_errors,
    settings,
    stdout,
    store,
)
from governance.errors import ConfigurationError
from governance.ingest.batch import IngestReport
from governance.ingest.listener import Listener
from governance.ingest.pipeline import utc_now
from governance.ngsi import to_ngsi_ld
from governance.protect.reveal import EntityRevealer
from governance.store.entities import iter_entities

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Adapter configuration (provisioning, column mapping, zones).",
                 exists=True, dir_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@handle_errors
def adapters_command(json_output: JsonOption = False) -> None:
    """List the registered feed adapters and the standard types they produce."""
    rows = [
        {
            "name": name,
            "version": cls.version,
            "module": cls.module,
            "transport": cls.transport,
            "source_format": cls.source_format,
            "target_types": list(cls.target_types),
            "needs_config": cls.requires_config,
        }
        for name, cls in registered_adapters().items()
    ]
    if json_output:
        emit_json(rows)
        return
    table = Table(title="citygov adapters")
    for column in ("name", "version", "module", "transport", "produces", "source format"):
        table.add_column(column)
    for name, cls in registered_adapters().items():
        table.add_row(name, cls.version, cls.module, cls.transport, ", ".join(cls.target_types), cls.source_format)
    stdout.print(table)


@handle_errors
def ingest_command(
    files: Annotated[list[Path], typer.Argument(help="Capture files (JSON lines) or CSV exports.",
                                                exists=True, dir_okay=False)],
    adapter: Annotated[str, typer.Option("--adapter", "-a", help="Adapter name (see `citygov adapters`).")],
    config: ConfigOption = None,
    strict: Annotated[bool, typer.Option(help="Exit with 3 if any record was quarantined.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Ingest files of captured messages through the whole collection pipeline."""
    cfg = settings()
    engine = store(cfg)
    feed = adapter_class(adapter).from_config_file(config)
    pipeline = governed_pipeline(engine, cfg)
    total = IngestReport()
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
        console=console, disable=json_output or not console.is_terminal, transient=False,
    ) as progress:
        task = progress.add_task(f"ingest {adapter}", total=len(files), counts="")
        for path in files:
            def advance(report: IngestReport) -> None:
                total.add(report)
                progress.update(task, counts=f"read {total.read} · stored {total.accepted} · "
                                            f"quarantined {total.quarantined} · duplicates {total.duplicates}")

            messages = feed.read(path, received_at=utc_now(), max_bytes=cfg.max_payload_bytes)
            pipeline.ingest(feed, messages, on_batch=advance)
            progress.advance(task)
    if json_output:
        emit_json(total.as_dict())
    else:
        print_report({adapter: total})
    if strict and total.quarantined:
        raise typer.Exit(EXIT_QUARANTINED)


def print_report(reports: dict[str, IngestReport]) -> None:
    table = Table(title="ingest summary")
    for column in ("adapter", "read", "stored", "quarantined", "duplicates", "entities"):
        table.add_column(column, justify="right" if column != "adapter" else "left")
    reasons: dict[str, int] = {}
    for name, report in reports.items():
        table.add_row(name, *(str(v) for v in (report.read, report.accepted, report.quarantined,
                                               report.duplicates, report.entities)))
        for reason, count in report.by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
    stdout.print(table)
    if reasons:
        by_reason = Table(title="quarantined, by reason")
        by_reason.add_column("reason")
        by_reason.add_column("records", justify="right")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            by_reason.add_row(reason, str(count))
        stdout.print(by_reason)


@handle_errors
def listen_command(
    adapter: Annotated[str, typer.Option("--adapter", "-a", help="Adapter name.")],
    topic: Annotated[str, typer.Option("--topic", "-t", help="MQTT topic filter, e.g. '/ul/+/+/attrs'.")],
    config: ConfigOption = None,
    client_id: Annotated[str | None, typer.Option(help="Persistent MQTT session id.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Subscribe to the broker (CITYGOV_MQTT_URL) and ingest until SIGINT/SIGTERM."""
    cfg = settings()
    engine = store(cfg)
    feed = adapter_class(adapter).from_config_file(config)
    listener = Listener(governed_pipeline(engine, cfg), feed, url=cfg.mqtt_url, topic=topic, client_id=client_id)

    def stop(_signum: int, _frame: object) -> None:
        listener.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console.print(f"listening on {cfg.mqtt_url} {topic} with {adapter}; Ctrl-C to stop")
    report = listener.run()
    if json_output:
        emit_json(report.as_dict())
    else:
        print_report({adapter: report})


@handle_errors
def entities_command(
    entity_type: Annotated[str | None, typer.Option("--type", "-t", help="Entity type to export.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="keyvalues or ngsi-ld.")] = "keyvalues",
    provenance: Annotated[bool, typer.Option(help="Wrap each entity with its provenance.")] = False,
    reveal: Annotated[bool, typer.Option(help="Decrypt sealed personal fields (needs the master key and the "
                                              "keystore; the export is audited).")] = False,
) -> None:
    """Export stored entities as JSON lines on stdout, as stored: personal fields sealed unless --reveal.

    Departments get data through the signed API, under policy; this command is the operator's view.
    """
    if fmt not in ("keyvalues", "ngsi-ld"):
        raise ConfigurationError("--format must be keyvalues or ngsi-ld")
    catalog = default_catalog()
    if entity_type is not None and entity_type not in catalog:
        raise ConfigurationError(f"unknown entity type {entity_type!r} (known: {', '.join(catalog.types())})")
    config = settings()
    engine = store(config)
    out = sys.stdout.buffer
    revealer = EntityRevealer.for_export(config, engine, entity_type=entity_type) if reveal else None
    for row in iter_entities(engine, entity_type=entity_type):
        entity = revealer.reveal(row) if revealer is not None else row["data"]
        if fmt == "ngsi-ld":
            entity = to_ngsi_ld(entity, catalog.get(row["entity_type"]))
        if provenance:
            entity = {
                "entity": entity,
                "provenance": {
                    "adapter": row["adapter"], "adapterVersion": row["adapter_version"],
                    "source": row["source"], "receivedAt": row["received_at"].isoformat(),
                    "rawSha256": row["raw_sha256"], "removedFields": row["removed_fields"],
                },
            }
        out.write(orjson.dumps(entity) + b"\n")
