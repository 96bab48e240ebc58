"""``citygov subject``: the data subject's rights — a full export of what is held about them, and erasure.

A subject is given by their real id (``urn:ngsi-ld:Person:R-55812``; a bare ``R-55812`` is read as a person)
or by their stored pseudonym. Output names them by pseudonym only; the export file, which is for the
subject, holds their decrypted data and is written 0600. Both operations are audited.

Exit codes as everywhere: 0 done; 1 failure; 2 usage or configuration (an erasure without --yes outside a
terminal); 4 database unreachable.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from governance.cli.common import console, emit_json, handle_errors, settings, stdout, store
from governance.errors import InvalidRequestError
from governance.subject.rights import ErasureReport, SubjectRights

app = typer.Typer(
    help="Rights of data subjects: export everything held about a person (decrypted, for them), or erase them "
    "(crypto-shredding, then deletion). Both are audited.",
    no_args_is_help=True,
)

SubjectArgument = Annotated[str, typer.Argument(
    help="The subject's id (a URN; a bare id such as R-55812 is read as a person) or their pseudonym (psn:v1:…).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ActorOption = Annotated[str | None, typer.Option(help="Who handles the request (default: cli:<user>).")]


def _actor(actor: str | None) -> str:
    return actor or f"cli:{os.environ.get('USER') or 'unknown'}"


def _rights() -> SubjectRights:
    config = settings()
    return SubjectRights(store(config), config)


@app.command("export")
@handle_errors
def export_command(
    subject: SubjectArgument,
    out: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False, help="Write the full export (JSON, mode 0600) here; print a summary.")] = None,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Everything held about a subject: entities decrypted, consents with receipts, quarantine, access history.

    Without --out, --json prints the whole export on stdout; plain output is a summary.
    """
    rights = _rights()
    with console.status("collecting the export…", spinner="dots") if not json_output else nullcontext():
        document = rights.export(subject, actor=_actor(actor))
    summary = {"subject": document["subject"]["pseudonym"], "counts": document["counts"],
               "file": str(out) if out else None}
    if out is not None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str) + b"\n")
        os.chmod(out, 0o600)
    if json_output:
        emit_json(summary if out is not None else document)
        return
    _print_summary(summary, document)


@app.command("erase")
@handle_errors
def erase_command(
    subject: SubjectArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask: erasure cannot be undone.")] = False,
    actor: ActorOption = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, max=100_000, help="Rows per transaction (default CITYGOV_RETENTION_BATCH_SIZE).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Erase a subject: destroy their data key, delete their rows, withdraw their consents. Irreversible.

    Running it again is harmless (nothing more is found; the request is recorded again).
    """
    rights = _rights()
    pseudonym = rights.pseudonym(subject)
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidRequestError("erasure cannot be undone: confirm with --yes")
        typer.confirm(f"Erase subject {pseudonym}? Their data can never be read again", abort=True)
    with console.status("erasing…", spinner="dots") if not json_output else nullcontext():
        report = rights.erase(subject, actor=_actor(actor), batch_size=batch_size)
    if json_output:
        emit_json(report.as_dict())
        return
    _print_erasure(report)


def _print_summary(summary: dict[str, Any], document: dict[str, Any]) -> None:
    counts = summary["counts"]
    stdout.print(f"subject {summary['subject']}", highlight=False)
    key = document["subject"]["key"]
    if key is None:
        stdout.print("data key: none (nothing personal was ever stored under it)")
    else:
        state = (f"destroyed {key['destroyed_at']} (erased)" if key["destroyed_at"]
                 else f"live, master key v{key['version']}")
        stdout.print(f"data key: {state}", highlight=False)
    table = Table(title="held about this subject")
    table.add_column("what")
    table.add_column("count", justify="right")
    for dataset, n in counts["datasets"].items():
        table.add_row(f"entities · {dataset}", str(n))
    if counts["unreadable"]:
        table.add_row("entities that no longer open (erased key)", str(counts["unreadable"]))
    table.add_row("consents (with their receipts)", str(counts["consents"]))
    table.add_row("quarantined messages naming them", str(counts["quarantine"]))
    table.add_row("audit log entries (access history)", str(counts["audit_entries"]))
    stdout.print(table)
    if summary["file"]:
        stdout.print(f"full export written to {summary['file']} (mode 0600)", highlight=False)
    else:
        console.print("the full export: add --out FILE, or --json for it on stdout")


def _print_erasure(report: ErasureReport) -> None:
    stdout.print(f"erased subject {report.subject} at {report.erased_at.isoformat()}", highlight=False)
    stdout.print("data key: " + ("destroyed now" if report.key_destroyed else "already destroyed, or never created"))
    table = Table()
    table.add_column("deleted")
    table.add_column("rows", justify="right")
    for dataset, n in sorted(report.entities.items()):
        table.add_row(f"entities · {dataset}", str(n))
    for adapter, n in sorted(report.quarantine.items()):
        table.add_row(f"quarantine · {adapter}", str(n))
    stdout.print(table)
    stdout.print(f"consents withdrawn: {report.consents_withdrawn}; audit entry #{report.audit_seq}", highlight=False)
