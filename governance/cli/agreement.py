"""``citygov agreement``: the register of data-sharing agreements — add, list, show, revoke, ODRL import/export.

Every change is validated against the policy documents (known departments, datasets, purposes,
well-formed obligations), becomes a new policy revision and is written to the audit log. Exit codes as
everywhere: 0 done, 1 failure, 2 bad usage (an invalid or unknown agreement), 4 database unreachable.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from governance.anonymize.budget import PrivacyBudget
from governance.cli.common import emit_json, handle_errors, settings, stdout, store
from governance.errors import InvalidRequestError
from governance.sharing.agreements import AgreementRegistry, AgreementView, parse_terms
from governance.sharing.odrl import from_odrl, to_odrl
from governance.sharing.quota import RequestQuota

app = typer.Typer(
    help="Data-sharing agreements: who may receive which datasets, for which purposes, fields and period, "
    "under which obligations, request quota and privacy budget. Import and export as ODRL (JSON-LD).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ActorOption = Annotated[str | None, typer.Option(help="Who makes the change, for the audit log (default: cli:<user>).")]
ReplaceOption = Annotated[bool, typer.Option("--replace", help="Change an existing agreement of the same id.")]


def _registry() -> AgreementRegistry:
    config = settings()
    return AgreementRegistry.from_settings(config, store(config))


def _actor(actor: str | None) -> str:
    return actor or f"cli:{os.environ.get('USER') or 'unknown'}"


def _emit_view(view: AgreementView, json_output: bool, verb: str | None = None) -> None:
    if json_output:
        emit_json(view.as_json())
        return
    if verb:
        stdout.print(f"agreement [bold]{view.id}[/bold] {verb}")
    data = view.as_json()
    table = Table(show_header=False, box=None)
    for key in ("title", "status", "source", "provider", "recipient", "recipient_kind", "datasets", "purposes",
                "fields", "valid_from", "valid_until", "basis", "quota_per_day", "epsilon_budget", "revoked_at"):
        value = data.get(key)
        if value is None:
            continue
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    for obligation in data["obligations"]:
        table.add_row("obligation", orjson.dumps(obligation).decode())
    stdout.print(table)


def _obligations(texts: list[str]) -> list[Any]:
    out = []
    for text in texts:
        try:
            out.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            example = '{"kind": "k_anonymity", "k": 10, "quasi_identifiers": ["location"]}'
            raise InvalidRequestError(f"--obligation is a JSON object such as {example}, not {text[:80]!r}") from None
    return out


@app.command("add")
@handle_errors
def add_command(
    agreement_id: Annotated[str, typer.Argument(metavar="ID", help="The agreement's id, e.g. dsa-2026-010.")],
    title: Annotated[str, typer.Option(help="What the agreement is for, in a sentence.")],
    provider: Annotated[str, typer.Option(help="The department that owns the data and signs.")],
    recipient: Annotated[str, typer.Option(help="The receiving department or external body.")],
    dataset: Annotated[list[str], typer.Option("--dataset", help="A dataset shared (repeat for more).")],
    purpose: Annotated[list[str], typer.Option("--purpose", help="A purpose covered, sub-purposes included (repeat).")],
    field: Annotated[list[str], typer.Option("--field", help="A field that may be shared (repeat).")],
    valid_from: Annotated[str, typer.Option(help="Start, ISO 8601 with a time zone (2026-01-01T00:00:00Z).")],
    valid_until: Annotated[str, typer.Option(help="End (exclusive), ISO 8601 with a time zone.")],
    recipient_kind: Annotated[str, typer.Option(help="department or external.")] = "external",
    basis: Annotated[str, typer.Option(help="Legal basis: public-task, consent, contract, legal-obligation, "
                                       "vital-interest, legitimate-interest.")] = "public-task",
    obligation: Annotated[list[str] | None, typer.Option(
        "--obligation", help='An obligation as JSON, e.g. \'{"kind": "aggregate_only", "group_by": ["location"]}\' '
        "(repeat).")] = None,
    quota_per_day: Annotated[int | None, typer.Option(help="Requests allowed per UTC day (default: no quota).")] = None,
    epsilon_budget: Annotated[float | None, typer.Option(
        help="Total epsilon of differentially private answers (default: CITYGOV_DP_DEFAULT_EPSILON_BUDGET).")] = None,
    replace: ReplaceOption = False,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add an agreement to the register (or change one with --replace)."""
    terms = parse_terms({
        "id": agreement_id, "title": title, "provider": provider, "recipient": recipient,
        "recipient_kind": recipient_kind, "datasets": dataset, "purposes": purpose, "fields": field,
        "valid_from": valid_from, "valid_until": valid_until, "basis": basis,
        "obligations": _obligations(obligation or []), "quota_per_day": quota_per_day,
        "epsilon_budget": epsilon_budget,
    })
    view = _registry().add(terms, actor=_actor(actor), replace=replace)
    _emit_view(view, json_output, "replaced" if replace else "added")


@app.command("list")
@handle_errors
def list_command(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked agreements.")] = False,
    recipient: Annotated[str | None, typer.Option(help="Only this recipient's agreements.")] = None,
    json_output: JsonOption = False,
) -> None:
    """List the agreements in force: the policies folder's and the register's."""
    views = _registry().list(include_revoked=include_revoked, recipient=recipient)
    if json_output:
        emit_json([v.as_json() for v in views])
        return
    table = Table()
    table.add_column("id", no_wrap=True)
    for name in ("status", "source", "provider", "recipient", "datasets", "valid until"):
        table.add_column(name)
    for view in views:
        terms = view.terms
        table.add_row(view.id, view.status, view.source, terms.provider, f"{terms.recipient} ({terms.recipient_kind})",
                      ", ".join(terms.datasets), view.as_json()["valid_until"])
    stdout.print(table)


@app.command("show")
@handle_errors
def show_command(
    agreement_id: Annotated[str, typer.Argument(metavar="ID")],
    json_output: JsonOption = False,
) -> None:
    """Show one agreement, with today's requests and the privacy budget spent."""
    config = settings()
    engine = store(config)
    view = AgreementRegistry.from_settings(config, engine).get(agreement_id)
    now = datetime.now(UTC)
    total = view.terms.epsilon_budget or config.dp_default_epsilon_budget
    budget = PrivacyBudget(engine).state(view.id, total=total)
    usage = {"requests_today": RequestQuota(engine).used(view.id, now),
             "epsilon_spent": budget.spent, "epsilon_remaining": budget.remaining, "dp_answers": budget.answers}
    if json_output:
        emit_json({**view.as_json(), "usage": usage})
        return
    _emit_view(view, False)
    stdout.print(f"today: {usage['requests_today']} requests; privacy budget: {budget.spent:g} of {total:g} spent "
                 f"in {budget.answers} answers")


@app.command("revoke")
@handle_errors
def revoke_command(
    agreement_id: Annotated[str, typer.Argument(metavar="ID")],
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Revoke an agreement: from the next request on, nothing is shared under it."""
    view = _registry().revoke(agreement_id, actor=_actor(actor))
    _emit_view(view, json_output, "revoked")


@app.command("import")
@handle_errors
def import_command(
    file: Annotated[Path, typer.Argument(help="An ODRL Agreement policy (JSON-LD), '-' for stdin.",
                                         allow_dash=True)],
    replace: ReplaceOption = False,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Import an agreement from ODRL JSON-LD (the shape `agreement export` writes; see docs/sharing.md)."""
    raw = sys.stdin.buffer.read(1_000_001) if str(file) == "-" else _read(file)
    if len(raw) > 1_000_000:
        raise InvalidRequestError("an ODRL file is at most 1 MB")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"{file} is not JSON: {exc}") from None
    terms = from_odrl(document)
    view = _registry().add(terms, actor=_actor(actor), replace=replace, origin="import")
    _emit_view(view, json_output, "imported")


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(1_000_001)
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror}") from None


@app.command("export")
@handle_errors
def export_command(
    agreement_id: Annotated[str, typer.Argument(metavar="ID")],
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.", dir_okay=False)] = None,
) -> None:
    """Export an agreement as an ODRL Agreement policy (JSON-LD)."""
    view = _registry().get(agreement_id)
    text = orjson.dumps(to_odrl(view.terms), option=orjson.OPT_INDENT_2) + b"\n"
    if out is None:
        sys.stdout.write(text.decode("utf-8"))
    else:
        out.write_bytes(text)
