"""``citygov demo``: a generated city day through every adapter."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import date
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from governance.cli.common import console, emit_json, governed_pipeline, handle_errors, settings, stdout, store
from governance.cli.ingest import JsonOption, print_report
from governance.consent.registry import ConsentRegistry
from governance.demo import DEFAULT_DATE, DEFAULT_SEED, demo_directory, ingest_demo, record_consents, write_demo
from governance.errors import ConfigurationError
from governance.ingest.batch import IngestReport


@handle_errors
def demo_command(
    seed: Annotated[int, typer.Option(help="Seed of the generated city: the same seed gives the same bytes.")] = (
        DEFAULT_SEED
    ),
    day: Annotated[str, typer.Option("--date", help="The day to simulate (YYYY-MM-DD, local time).")] = (
        DEFAULT_DATE.isoformat()
    ),
    scale: Annotated[float, typer.Option(min=0.01, max=20.0,
                                         help="Size of the city: 1 is the full demo, 0.1 a tenth of it.")] = 1.0,
    json_output: JsonOption = False,
) -> None:
    """Generate a realistic city day for all three modules and ingest it through every adapter.

    Street lights, traffic counters, UltraLight and LoRaWAN sensors, a department CSV and home care
    hubs, with a small share of realistic defects, are written under <data dir>/demo/<date>/ and run
    through the whole governed collection pipeline (the residents' consents are recorded first).
    Running it again on the same database stores nothing new: every record is counted as a duplicate.
    """
    try:
        simulated = date.fromisoformat(day)
    except ValueError:
        raise ConfigurationError(f"--date must be YYYY-MM-DD, got {day!r}") from None
    cfg = settings()
    engine = store(cfg)
    directory = demo_directory(cfg, simulated)
    with console.status("generating the city day…", spinner="dots") if not json_output else nullcontext():
        files = write_demo(directory, seed=seed, day=simulated, scale=scale, max_payload_bytes=cfg.max_payload_bytes)
    consents = record_consents(ConsentRegistry.from_settings(cfg, engine), files.plan)
    total_records = sum(f.records for f in files.feeds.values())
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
        console=console, disable=json_output or not console.is_terminal, transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}
        seen: dict[str, IngestReport] = {}
        overall = progress.add_task("all feeds", total=total_records, counts="")

        def started(name: str, records: int) -> None:
            tasks[name] = progress.add_task(name, total=records, counts="")
            seen[name] = IngestReport()

        def batch_done(name: str, report: IngestReport) -> None:
            seen[name].add(report)
            got = seen[name]
            progress.update(tasks[name], advance=report.read,
                            counts=f"stored {got.accepted} · quarantined {got.quarantined} · "
                                   f"duplicates {got.duplicates}")
            progress.advance(overall, report.read)

        result = ingest_demo(files, governed_pipeline(engine, cfg), on_start=started, on_batch=batch_done)
    if json_output:
        emit_json({**result.as_dict(), "consents_recorded": consents})
        return
    print_report(result.reports)
    totals = result.totals
    injected = sum(len(f.defects) for f in files.feeds.values())
    stdout.print(f"city day {files.day.isoformat()} (seed {files.seed}, scale {files.scale:g}): "
                 f"{totals.read} records, {totals.entities} entities; files in {files.directory}")
    if consents:
        stdout.print(f"recorded {consents} residents' explicit consent to care monitoring in the consent registry "
                     "(the collection policy refuses their observations without it)")
    if result.rerun:
        stdout.print(f"[bold green]idempotent:[/] this database already held this day — all {totals.read} records "
                     "were counted as duplicates and nothing was stored twice.")
    else:
        stdout.print(f"{injected} records carry a deliberate defect (listed in {files.manifest}); "
                     "see them with `citygov quarantine list`.")
        stdout.print("Run `citygov demo` again with the same seed and date: every record will be counted as a "
                     "duplicate (idempotent ingest).")
