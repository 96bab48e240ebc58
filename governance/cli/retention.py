"""``citygov retention``: the sweep that deletes what is past its storage deadline, and when what expires.

Exit codes as everywhere: 0 done; 1 failure; 2 usage or configuration; 4 database unreachable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from governance.cli.common import console, emit_json, handle_errors, settings, stdout, store
from governance.retention.sweeper import PHASES, Phase, SweepReport, aggregate_rules, expired, status, sweep

app = typer.Typer(
    help="Retention: delete (or summarize, where the policy keeps aggregates) every stored row past its "
    "retain_until, and show when rows expire.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
_TITLES: dict[Phase, str] = {"entities": "entity rows", "quarantine": "quarantine rows",
                             "aggregates": "expired aggregates"}


@app.command("sweep")
@handle_errors
def sweep_command(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only count what would be deleted; write nothing.")] = False,
    batch_size: Annotated[int | None, typer.Option(
        min=1, max=100_000, help="Rows per transaction (default CITYGOV_RETENTION_BATCH_SIZE).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Delete every row whose retain_until has passed: one transaction per batch, one audit entry per run.

    Datasets the retention policy keeps in aggregate form are summarized into hourly rows first. A dry run
    counts only and is not audited (it changes nothing).
    """
    cfg = settings()
    engine = store(cfg)
    now = datetime.now(UTC)
    rules = aggregate_rules(cfg)
    if dry_run:
        report = expired(engine, now=now, rules=rules)
    else:
        planned = expired(engine, now=now, rules=rules)
        totals = {"entities": planned.entities, "quarantine": planned.quarantine, "aggregates": planned.aggregates}
        with Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, disable=json_output or not console.is_terminal,
        ) as progress:
            tasks = {phase: progress.add_task(_TITLES[phase], total=sum(totals[phase].values())) for phase in PHASES}
            report = sweep(engine, cfg, now=now, batch_size=batch_size, rules=rules,
                           progress=lambda phase, n: progress.advance(tasks[phase], n))
    if json_output:
        emit_json(report.as_dict())
        return
    _print_report(report)


@app.command("status")
@handle_errors
def status_command(json_output: JsonOption = False) -> None:
    """How many rows expire when: per dataset (entities, aggregates) and per quarantine adapter."""
    shown = status(store(settings()))
    if json_output:
        emit_json(shown)
        return
    for key, title, by in (("entities", "stored entities", "dataset"), ("quarantine", "quarantine", "adapter"),
                           ("aggregates", "hourly aggregates", "dataset")):
        _print_schedule(shown[key], title, by)


def _print_report(report: SweepReport) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    table = Table(title=f"retention sweep ({'dry run' if report.dry_run else 'done'}) — {verb}, as of "
                        f"{report.now.isoformat(timespec='seconds')}")
    for column in ("table", "dataset / adapter", "rows", "summarized first"):
        table.add_column(column, justify="right" if column in ("rows", "summarized first") else "left")
    for name, counts, summarized in (("entity", report.entities, report.summarized),
                                     ("quarantine", report.quarantine, None),
                                     ("aggregate", report.aggregates, None)):
        for key, n in sorted(counts.items()):
            table.add_row(name, key, str(n), str(summarized.get(key, 0)) if summarized is not None else "")
    stdout.print(table)
    audit = f"; audit entry #{report.audit_seq}" if report.audit_seq is not None else ""
    stdout.print(f"{report.total} rows {verb}" + (f" in {report.batches} batches{audit}" if not report.dry_run
                                                    else " (nothing written, nothing audited)"), highlight=False)


def _print_schedule(rows: dict[str, dict[str, Any]], title: str, by: str) -> None:
    table = Table(title=title)
    columns = ("rows", "expired", "within_1d", "within_7d", "within_30d", "within_365d", "later", "no_deadline")
    table.add_column(by)
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("next")
    for key, row in rows.items():
        table.add_row(key, *(str(row[c]) for c in columns), row["next"] or "-")
    stdout.print(table)
