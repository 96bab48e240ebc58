"""``citygov audit``: the auditor's tools — read, verify, checkpoint and export the audit log.

Exit codes as everywhere (0 done, 1 failure, 2 usage or configuration, 4 unreachable), plus
5: verification failed — the log, checkpoint or bundle was changed, truncated, forked or replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.table import Table
from sqlalchemy import Engine

from governance.audit.bundle import checkpoint_document, export_bundle, read_checkpoint, read_json, write_json
from governance.audit.errors import VerificationError
from governance.audit.keys import PublicKey, load_public_key
from governance.audit.log import AuditLog, latest_tree_head
from governance.audit.query import MAX_LIMIT, EntryFilter, find_entries, subject_report
from governance.audit.verify import verify_bundle, verify_log, verify_since
from governance.cli.common import EXIT_VERIFICATION_FAILED, console, emit_json, handle_errors, settings, stdout, store
from governance.config import Settings
from governance.errors import ConfigurationError, NotFoundError
from governance.ingest.message import entity_urn

app = typer.Typer(
    help="The tamper-evident audit log: query, verify, checkpoint, export. "
    "Exit code 5 means verification failed.",
    no_args_is_help=True,
)

P = ParamSpec("P")
R = TypeVar("R")
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
KeyOption = Annotated[Path | None, typer.Option(
    "--key", help="Trusted public key (PEM or base64) instead of the one in the data directory.",
    exists=True, dir_okay=False)]


def verification_exit(func: Callable[P, R]) -> Callable[P, R]:
    """A failed verification is not a crash: say what failed and exit 5."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except VerificationError as exc:
            console.print(f"[red]VERIFICATION FAILED:[/red] {exc}")
            raise typer.Exit(EXIT_VERIFICATION_FAILED) from None

    return wrapper


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{option}: not a date or RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigurationError(f"{option}: give a zone (e.g. {text}Z or {text}+01:00)")
    return moment


def subject_id(raw: str) -> str:
    """A bare id is read as a person: ``R-1`` → ``urn:ngsi-ld:Person:R-1``; a URN or a pseudonym is taken as it is."""
    return raw if raw.startswith(("urn:", "psn:")) else entity_urn("Person", raw)


def subject_pseudonym(engine: Engine, cfg: Settings, raw: str) -> str:
    """The subject as the log names it: the keyring's pseudonym (a given pseudonym needs no master key)."""
    return AuditLog.open(engine, cfg.data_dir, settings=cfg).pseudonymize(subject_id(raw))


def _public_key(key: Path | None) -> PublicKey:
    return PublicKey.from_file(key) if key else load_public_key(settings().data_dir)


@app.command("log")
@handle_errors
def log_command(
    actor: Annotated[str | None, typer.Option(help="Only entries by this actor (e.g. adapter:care-hub).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (e.g. ingest.batch).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only entries about this dataset.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only entries touching this data subject (raw id).")] = None,
    decision: Annotated[str | None, typer.Option(help="Only this decision (e.g. deny, quarantined).")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (RFC 3339 or YYYY-MM-DD, inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (exclusive).")] = None,
    after: Annotated[int | None, typer.Option(help="Only entries after this sequence number.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT)] = 100,
    json_output: JsonOption = False,
) -> None:
    """List audit entries, oldest first."""
    cfg = settings()
    engine = store(cfg)
    pseudonym_ = subject_pseudonym(engine, cfg, subject) if subject else None
    wanted = EntryFilter(actor=actor, action=action, decision=decision, dataset=dataset, subject=pseudonym_,
                         since=_when(since, "--since"), until=_when(until, "--until"), after_seq=after, limit=limit)
    with engine.connect() as conn:
        entries = find_entries(conn, wanted)
    if json_output:
        emit_json([e.as_json() for e in entries])
        return
    table = Table(title=f"audit log ({len(entries)} entries)")
    for column in ("#", "time", "actor", "action", "dataset", "decision", "reasons"):
        table.add_column(column, overflow="fold")
    for e in entries:
        f = e.fields
        datasets = f.get("dataset") or ", ".join(f.get("refs", {}).get("datasets", []) or [])
        table.add_row(str(e.seq), f["time"], f["actor"], f["action"], datasets or "", f.get("decision") or "",
                      ", ".join(f.get("reasons", [])))
    stdout.print(table)


@app.command("verify")
@handle_errors
@verification_exit
def verify_command(
    since: Annotated[Path | None, typer.Option(
        help="A checkpoint file: also prove the log only grew since then.", exists=True, dir_okay=False)] = None,
    bundle: Annotated[Path | None, typer.Option(
        help="Verify an exported bundle on its own (no database).", exists=True, dir_okay=False)] = None,
    key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Recompute the whole tree and check every signed tree head (exit 5 if anything does not verify)."""
    if bundle is not None:
        trusted = PublicKey.from_file(key) if key else None
        checkpoint = read_checkpoint(since) if since else None
        report = verify_bundle(read_json(bundle, "bundle"), trusted_key=trusted, checkpoint=checkpoint)
        if trusted is None:
            console.print(f"[yellow]note:[/yellow] the bundle was checked against its own key "
                          f"{report.tree_head.key_id}; compare it with the published key (or pass --key)")
        _print(report.as_json(), json_output,
               f"bundle OK: entries #{report.first_seq}..#{report.last_seq} are in the signed tree of "
               f"{report.tree_head.tree_size} entries (root {report.tree_head.root_hash.hex()})")
        return
    public = _public_key(key)
    engine = store(settings())
    log_report = verify_log(engine, public, progress=_progress)
    result: dict[str, Any] = log_report.as_json()
    message = (f"log OK: {log_report.entries:,} entries, {log_report.tree_heads:,} signed tree heads, "
               f"root {log_report.root_hash.hex()}, key {public.key_id}")
    if since is not None:
        consistency = verify_since(engine, public, read_checkpoint(since))
        result["since"] = consistency.as_json()
        message += (f"\nconsistent with checkpoint: grew from {consistency.checkpoint.tree_size:,} to "
                    f"{consistency.current.tree_size:,} entries")
    _print(result, json_output, message)


@app.command("checkpoint")
@handle_errors
def checkpoint_command(
    out: Annotated[Path, typer.Option("--out", help="Where to save the signed tree head.", dir_okay=False)],
    sign: Annotated[bool, typer.Option("--sign", help="Issue a fresh signed tree head first (needs the "
                                                        "signing key).")] = False,
    json_output: JsonOption = False,
) -> None:
    """Save the current signed tree head, to check later that the log only grew (`audit verify --since`)."""
    cfg = settings()
    engine = store(cfg)
    if sign:
        head = AuditLog.open(engine, cfg.data_dir).sign_tree_head()
    else:
        with engine.connect() as conn:
            found = latest_tree_head(conn)
        if found is None:
            raise NotFoundError("the log has no signed tree head yet (use --sign)")
        head = found
    key = load_public_key(cfg.data_dir)
    write_json(out, checkpoint_document(head, key))
    _print(head.as_json(), json_output, f"checkpoint saved to {out}: {head.tree_size:,} entries, "
                                        f"root {head.root_hash.hex()}")


@app.command("export")
@handle_errors
def export_command(
    out: Annotated[Path, typer.Option("--out", help="Bundle file to write.", dir_okay=False)],
    first: Annotated[int | None, typer.Option("--from", min=0, help="First sequence number (default 0).")] = None,
    last: Annotated[int | None, typer.Option("--to", min=0, help="Last sequence number, inclusive.")] = None,
) -> None:
    """Write a self-contained bundle: entries, signed tree head, public key and proofs."""
    cfg = settings()
    key = load_public_key(cfg.data_dir)
    with store(cfg).connect() as conn:
        document = export_bundle(conn, key, first, last)
    write_json(out, document)
    console.print(f"exported entries #{document['first_seq']}..#{document['last_seq']} to {out}")


@app.command("subject")
@handle_errors
def subject_command(
    subject: Annotated[str, typer.Argument(help="The data subject's id (a URN, or a bare id for a person).")],
    json_output: JsonOption = False,
) -> None:
    """Subject access report: every logged event that touched this data subject."""
    cfg = settings()
    engine = store(cfg)
    pseudonym_ = subject_pseudonym(engine, cfg, subject)
    with engine.connect() as conn:
        report = subject_report(conn, pseudonym_)
    if json_output:
        emit_json(report)
        return
    stdout.print(f"subject {subject_id(subject)} (pseudonym {pseudonym_}): {report['events']} events")
    for title, key in (("by department / actor", "by_actor"), ("by purpose", "by_purpose"),
                       ("by dataset", "by_dataset")):
        stdout.print(f"  {title}: " + (", ".join(f"{k} {v}" for k, v in report[key].items()) or "-"))
    table = Table()
    for column in ("#", "time", "actor", "action", "datasets", "purpose", "decision"):
        table.add_column(column, overflow="fold")
    for e in report["entries"]:
        table.add_row(str(e["seq"]), e["time"], e["actor"], e["action"], ", ".join(e["datasets"]),
                      e["purpose"] or "", e["decision"] or "")
    stdout.print(table)


@app.command("key")
@handle_errors
def key_command(json_output: JsonOption = False) -> None:
    """Print the log's public key (PEM) and its key id."""
    key = load_public_key(settings().data_dir)
    if json_output:
        emit_json({"key_id": key.key_id, "public_key": key.b64, "pem": key.pem()})
        return
    stdout.print(key.pem().rstrip(), highlight=False)
    console.print(f"key id {key.key_id}")


def _progress(done: int) -> None:
    if done and done % 200_000 == 0:
        console.print(f"verified {done:,} entries…")


def _print(value: dict[str, Any], json_output: bool, message: str) -> None:
    if json_output:
        emit_json(value)
    else:
        stdout.print(message, highlight=False)
