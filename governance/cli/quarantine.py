"""``citygov quarantine list|show|retry``: look at what was refused, fix the cause, try again."""

from __future__ import annotations

import base64
import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.catalog import default_catalog
from governance.cli.common import emit_json, governed_pipeline, handle_errors, settings, stdout, store
from governance.cli.ingest import JsonOption, print_report
from governance.errors import ConfigurationError
from governance.ingest.retry import retry
from governance.protect.fieldcrypt import FieldProtector
from governance.protect.keyring import Keyring
from governance.protect.quarantine import QuarantineVault
from governance.store.quarantine import QuarantineFilter, get_quarantined, list_quarantined

app = typer.Typer(help="Records that failed a step, with their raw payload and the reason.", no_args_is_help=True)

StatusOption = Annotated[str, typer.Option(help="open, resolved or all.")]


def _filter(status: str, adapter: str | None, reason: str | None, limit: int) -> QuarantineFilter:
    if status not in ("open", "resolved", "all"):
        raise ConfigurationError("--status must be open, resolved or all")
    return QuarantineFilter(status=None if status == "all" else status, adapter=adapter, reason=reason,
                            limit=limit)


def _public(row: dict[str, Any], *, with_payload: bool, vault: QuarantineVault | None = None) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "payload"}
    if with_payload and row.get("sealed") and vault is None:
        out["payload"] = None
        out["note"] = "the payload is sealed (a feed that can carry personal data); --reveal opens it, audited"
    elif with_payload:
        if row.get("sealed") and vault is not None:
            row = vault.open_row(row)
            out["topic"] = row["topic"]
        payload = row["payload"]
        try:
            out["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            out["payload_b64"] = base64.b64encode(payload).decode("ascii")
    return out


@app.command("list")
@handle_errors
def list_command(
    status: StatusOption = "open",
    adapter: Annotated[str | None, typer.Option(help="Only this adapter.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    json_output: JsonOption = False,
) -> None:
    """List quarantined records, oldest first."""
    rows = list_quarantined(store(settings()), _filter(status, adapter, reason, limit))
    if json_output:
        emit_json([_public(r, with_payload=False) for r in rows])
        return
    table = Table(title=f"quarantine ({status})")
    for column in ("#", "adapter", "step", "reason", "detail", "source", "status"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(str(r["pk"]), r["adapter"], r["step"], r["reason"], r["detail"], r["source"], r["status"])
    stdout.print(table)


@app.command("show")
@handle_errors
def show_command(
    record: Annotated[int, typer.Argument(help="Quarantine record number.")],
    reveal: Annotated[bool, typer.Option(help="Open a sealed payload (personal data); the access is audited.")]
    = False,
    json_output: JsonOption = False,
) -> None:
    """Show one quarantined record with its raw payload (sealed payloads only with --reveal)."""
    cfg = settings()
    engine = store(cfg)
    found = get_quarantined(engine, record)
    vault = None
    if reveal and found.get("sealed"):
        keyring = Keyring.from_settings(cfg, engine)
        vault = QuarantineVault(keyring, default_catalog(), retention_days=cfg.quarantine_retention_days,
                                protector=FieldProtector.from_settings(cfg, engine, keyring=keyring))
        AuditLog.open(engine, cfg.data_dir).append([AuditEvent(
            actor=f"operator:{getpass.getuser()}", action="quarantine.reveal", stage="storage", decision="revealed",
            refs={"quarantine": record, "adapter": found["adapter"], "fingerprint": found["fingerprint"]},
        )])
    row = _public(found, with_payload=True, vault=vault)
    if json_output:
        emit_json(row)
        return
    for key, value in row.items():
        stdout.print(f"[bold]{key}[/bold]: {value}", markup=True, highlight=False)


@app.command("retry")
@handle_errors
def retry_command(
    records: Annotated[list[int] | None, typer.Argument(help="Record numbers; none = every open record "
                                                               "matching the filters.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Only this adapter.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                                help="Use this configuration instead of the recorded one.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Re-run the pipeline on quarantined records, e.g. after fixing a provisioning or mapping file."""
    cfg = settings()
    engine = store(cfg)
    if records:
        rows = [get_quarantined(engine, pk) for pk in records]
    else:
        rows = list_quarantined(engine, QuarantineFilter(status="open", adapter=adapter, reason=reason,
                                                         limit=1_000_000))
    report = retry(governed_pipeline(engine, cfg), rows, config=config)
    if json_output:
        emit_json(report.as_dict())
    else:
        print_report({"retry": report})
