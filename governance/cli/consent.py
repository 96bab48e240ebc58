"""``citygov consent``: grant, renew, withdraw and inspect consents; verify the signed receipts.

Exit codes as everywhere (0 done, 1 failure, 2 usage or configuration, 4 unreachable), plus 5: a
receipt failed verification (altered, or not signed by a key we trust). Subjects are given by their
real id (``urn:ngsi-ld:Person:R-55812``) and shown only as pseudonyms. An HTTP API for the same
operations comes with the signed-API issue.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from governance.cli.common import emit_json, handle_errors, settings, stdout, store
from governance.consent.errors import InvalidConsentError
from governance.consent.models import ConsentResult, ConsentView
from governance.consent.receipt import load_public_key, verify_receipt
from governance.consent.registry import ConsentRegistry
from governance.errors import ConfigurationError
from governance.protect.keyring import public_pem

app = typer.Typer(
    help="Consent of data subjects: grant, renew, withdraw, show, list; signed receipts. "
    "Exit code 5 means a receipt failed verification.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ActorOption = Annotated[str | None, typer.Option(help="Who records this (default: cli:<user>).")]
ReceiptOut = Annotated[Path | None, typer.Option("--receipt-out", help="Write the signed receipt (JWS) here.",
                                                 dir_okay=False)]
ReasonOption = Annotated[str | None, typer.Option(help="Why, in a sentence (kept in the history).")]




def _registry() -> ConsentRegistry:
    """The registry with every change written to the audit log in the change's own transaction."""
    from governance.audit.log import AuditLog
    from governance.audit.observer import ConsentAuditor

    config = settings()
    engine = store(config)
    registry = ConsentRegistry.from_settings(config, engine)
    registry.on_change = ConsentAuditor(AuditLog.open(engine, config.data_dir, keyring=registry.keyring))
    return registry


def _actor(actor: str | None) -> str:
    return actor or f"cli:{os.environ.get('USER') or 'unknown'}"


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidConsentError(f"{option} is not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise InvalidConsentError(f"{option} needs a time zone (…Z or …+01:00): {text!r}")
    return value.astimezone(UTC)


def _until(valid_until: str | None, days: int | None, start: datetime | None) -> datetime | None:
    if valid_until is not None and days is not None:
        raise InvalidConsentError("give --valid-until or --days, not both")
    if days is not None:
        return (start or datetime.now(UTC)) + timedelta(days=days)
    return _time(valid_until, "--valid-until")


def _emit_result(result: ConsentResult, receipt_out: Path | None, json_output: bool, verb: str) -> None:
    if receipt_out is not None:
        fd = os.open(receipt_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(result.receipt + "\n")
    if json_output:
        emit_json({**result.model_dump(mode="json"), "receipt_file": str(receipt_out) if receipt_out else None})
        return
    view = result.consent
    stdout.print(f"{verb} consent [bold]{view.consent_id}[/bold] for {view.subject}", highlight=False)
    stdout.print(f"purposes: {', '.join(view.purposes)}; status: {view.status}; "
                 f"valid {view.valid_from.isoformat()} → {view.valid_until.isoformat() if view.valid_until else '∞'}",
                 highlight=False)
    if receipt_out is not None:
        stdout.print(f"receipt {result.receipt_id} written to {receipt_out}", highlight=False)
    else:
        stdout.print(f"receipt {result.receipt_id}: {result.receipt}", highlight=False, soft_wrap=True)


@app.command("grant")
@handle_errors
def grant_command(
    subject: Annotated[str, typer.Option(help="The resident's real id; only its pseudonym is stored.")],
    controller: Annotated[str, typer.Option(help="Who decides on the processing (PII controller).")],
    purpose: Annotated[list[str], typer.Option(help="A purpose consented to (repeat for several).")],
    collection_method: Annotated[str, typer.Option(help="How consent was given (paper form, app…).")],
    recipient: Annotated[list[str] | None, typer.Option(help="A recipient data may be shared with (repeat).")] = None,
    legal_basis: Annotated[
        Literal["consent", "explicit-consent"], typer.Option(help="explicit-consent for special categories.")
    ] = "consent",
    special_category: Annotated[list[str] | None, typer.Option(help="Special category covered, e.g. health.")] = None,
    valid_from: Annotated[str | None, typer.Option(help="ISO 8601 start (default now).")] = None,
    valid_until: Annotated[str | None, typer.Option(help="ISO 8601 end (default: until withdrawn).")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Valid for this many days instead of --valid-until.")] = None,
    jurisdiction: str = "EU",
    language: str = "en",
    policy_url: str | None = None,
    on_behalf: Annotated[bool, typer.Option(help="Recorded by an agency on behalf of the controller.")] = False,
    actor: ActorOption = None,
    receipt_out: ReceiptOut = None,
    json_output: JsonOption = False,
) -> None:
    """Record a consent and issue its signed receipt."""
    start = _time(valid_from, "--valid-from")
    request: dict[str, Any] = {
        "subject_id": subject, "controller": controller, "purposes": purpose, "recipients": recipient or [],
        "legal_basis": legal_basis, "collection_method": collection_method, "jurisdiction": jurisdiction,
        "language": language, "policy_url": policy_url, "special_categories": special_category or [],
        "valid_from": start, "valid_until": _until(valid_until, days, start), "on_behalf": on_behalf,
    }
    result = _registry().grant(request, actor=_actor(actor))
    _emit_result(result, receipt_out, json_output, "granted")


@app.command("renew")
@handle_errors
def renew_command(
    consent_id: Annotated[str, typer.Argument(help="The consent to renew.")],
    valid_until: Annotated[str | None, typer.Option(help="New ISO 8601 end.")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Valid for this many days from now.")] = None,
    open_ended: Annotated[bool, typer.Option("--open-ended", help="Valid until withdrawn.")] = False,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    receipt_out: ReceiptOut = None,
    json_output: JsonOption = False,
) -> None:
    """Extend an active consent's period and issue a receipt for the renewal."""
    until = _until(valid_until, days, None)
    if (until is None) != open_ended:
        raise InvalidConsentError("give the new end (--valid-until or --days) or --open-ended")
    result = _registry().renew(consent_id, valid_until=until, actor=_actor(actor), reason=reason)
    _emit_result(result, receipt_out, json_output, "renewed")


@app.command("withdraw")
@handle_errors
def withdraw_command(
    consent_id: Annotated[str, typer.Argument(help="The consent to withdraw.")],
    reason: ReasonOption = None,
    actor: ActorOption = None,
    receipt_out: ReceiptOut = None,
    json_output: JsonOption = False,
) -> None:
    """Withdraw a consent: effective at once for collection, use and sharing. Issues a receipt."""
    result = _registry().withdraw(consent_id, actor=_actor(actor), reason=reason)
    _emit_result(result, receipt_out, json_output, "withdrew")


def _public(view: ConsentView, now: datetime) -> dict[str, Any]:
    return {**view.model_dump(mode="json"), "status_now": view.status_at(now)}


@app.command("show")
@handle_errors
def show_command(
    consent_id: Annotated[str, typer.Argument(help="The consent to show.")],
    json_output: JsonOption = False,
) -> None:
    """One consent with its full history."""
    view = _registry().get(consent_id)
    now = datetime.now(UTC)
    if json_output:
        emit_json(_public(view, now))
        return
    for key, value in _public(view, now).items():
        if key != "history":
            stdout.print(f"[bold]{key}[/bold]: {value}", highlight=False)
    stdout.print("[bold]history[/bold]:")
    for event in view.history:
        until = event.valid_until.isoformat() if event.valid_until else "∞"
        reason = f" — {event.reason}" if event.reason else ""
        stdout.print(f"  #{event.seq} {event.event} at {event.at.isoformat()} by {event.actor}: {event.status}, "
                     f"valid until {until}{reason} (receipt {event.receipt_id})", highlight=False, soft_wrap=True)


@app.command("list")
@handle_errors
def list_command(
    subject: Annotated[str | None, typer.Option(help="Only this subject (real id or pseudonym).")] = None,
    status: Annotated[Literal["active", "withdrawn", "all"], typer.Option(help="Recorded status.")] = "all",
    purpose: Annotated[str | None, typer.Option(help="Only consents covering this purpose.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    json_output: JsonOption = False,
) -> None:
    """Consents, oldest grant first."""
    views = _registry().find(subject_id=subject, status=None if status == "all" else status, purpose=purpose,
                             limit=limit)
    now = datetime.now(UTC)
    if json_output:
        emit_json([_public(v, now) for v in views])
        return
    table = Table(title=f"consents ({status})")
    for column in ("consent", "subject", "controller", "purposes", "recipients", "status now", "valid until"):
        table.add_column(column, overflow="fold")
    for v in views:
        table.add_row(v.consent_id, v.subject, v.controller, ", ".join(v.purposes), ", ".join(v.recipients),
                      v.status_at(now), v.valid_until.isoformat() if v.valid_until else "∞")
    stdout.print(table)


@app.command("verify-receipt")
@handle_errors
def verify_receipt_command(
    receipt: Annotated[Path, typer.Argument(help="Receipt file (JWS), or - for stdin.", allow_dash=True)],
    public_key: Annotated[Path | None, typer.Option(
        help="Trust this PEM public key (from `citygov consent public-key`) instead of the keyring.",
        exists=True, dir_okay=False)] = None,
    json_output: JsonOption = False,
) -> None:
    """Check a receipt's signature and content; exit 5 if it is not genuine."""
    token = sys.stdin.read() if str(receipt) == "-" else _read(receipt)
    if public_key is not None:
        claims = verify_receipt(token, load_public_key(public_key.read_bytes()))
    else:
        claims = _registry().verify_receipt(token)
    if json_output:
        emit_json({"valid": True, "claims": claims})
        return
    block = claims["citygov"]
    stdout.print(f"[green]valid[/green] receipt {claims['jti']} issued by {claims['iss']}", highlight=False)
    stdout.print(f"consent {block['consentId']}: {block['event']} (#{block['seq']}), status {block['status']}; "
                 f"subject {claims['sub']}; purposes "
                 f"{', '.join(p['purpose'] for s in claims['services'] for p in s['purposes'])}", highlight=False)


@app.command("public-key")
@handle_errors
def public_key_command(json_output: JsonOption = False) -> None:
    """The receipt-signing public keys (PEM, by kid): give them to whoever keeps receipts."""
    keys = {kid: public_pem(key) for kid, key in _registry().receipt_public_keys().items()}
    if json_output:
        emit_json(keys)
        return
    for kid, pem in keys.items():
        stdout.print(f"# {kid}\n{pem}", highlight=False, end="")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {type(exc).__name__}") from None
