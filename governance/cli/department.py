"""``citygov department``: register departments and external recipients and their public keys.

A privacy officer's commands. Each change is one audit entry (``department.change``) in the change's
own transaction. Keys are given as PEM or JWK files (what ``citygov client keygen`` writes) and named by
their RFC 7638 thumbprint (``kid``), which the caller puts in its request headers. Only Ed25519
(EdDSA) and P-256 (ES256) keys are accepted; revoking a key is immediate and final.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from governance.api.departments import DepartmentRegistry, DepartmentView, KeyView
from governance.api.jose import PublicJwk, parse_public_key
from governance.cli.common import emit_json, handle_errors, settings, stdout, store
from governance.errors import ConfigurationError

app = typer.Typer(
    help="Departments and external recipients allowed to call the signed data API, and their public keys.",
    no_args_is_help=True,
)
key_app = typer.Typer(help="Add or revoke a caller's public keys (several may be active, for rotation).",
                      no_args_is_help=True)
app.add_typer(key_app, name="key")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ActorOption = Annotated[str | None, typer.Option(help="Who makes the change (default: cli:<user>).")]
KeyFile = Annotated[Path, typer.Option("--public-key", help="Public key file: PEM or JWK (Ed25519 or P-256).",
                                       exists=True, dir_okay=False)]


def _registry() -> DepartmentRegistry:
    from governance.audit.log import AuditLog

    config = settings()
    engine = store(config)
    return DepartmentRegistry(engine, AuditLog.open(engine, config.data_dir, settings=config))


def _actor(actor: str | None) -> str:
    return actor or f"cli:{os.environ.get('USER') or 'unknown'}"


def _key(path: Path) -> PublicJwk:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {type(exc).__name__}") from None
    return parse_public_key(data)


def _split(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated lists alike: ``--purposes a,b --purposes c``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@app.command("add")
@handle_errors
def add_command(
    name: Annotated[str, typer.Argument(help="The caller's name: the 'iss' of its requests (e.g. transport).")],
    public_key: KeyFile,
    kind: Annotated[str, typer.Option(help="department (the city's own) or external (a recipient).")] = "department",
    purposes: Annotated[list[str] | None, typer.Option(
        "--purposes", "--purpose", help="Purposes it may name (comma-separated or repeated); none: any.")] = None,
    roles: Annotated[list[str] | None, typer.Option(
        "--roles", "--role", help="Roles, e.g. auditor (comma-separated or repeated).")] = None,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Register a department or external recipient with its first public key."""
    view = _registry().add(name, _key(public_key), kind=kind, purposes=_split(purposes), roles=_split(roles),
                           actor=_actor(actor))
    if json_output:
        emit_json(view.as_json())
        return
    stdout.print(f"registered {view.kind} [bold]{view.name}[/bold]; key {view.keys[0].kid} ({view.keys[0].alg})",
                 highlight=False)


@app.command("list")
@handle_errors
def list_command(json_output: JsonOption = False) -> None:
    """Every registered department and recipient with its keys."""
    views = _registry().all()
    if json_output:
        emit_json([v.as_json() for v in views])
        return
    table = Table(title="registered callers")
    for column in ("name", "kind", "purposes", "roles", "active keys", "revoked keys"):
        table.add_column(column, overflow="fold")
    for v in views:
        table.add_row(v.name, v.kind, ", ".join(v.purposes) or "(any)", ", ".join(v.roles),
                      "\n".join(f"{k.kid} {k.alg}" for k in v.active_keys),
                      str(len(v.keys) - len(v.active_keys)))
    stdout.print(table)


@app.command("show")
@handle_errors
def show_command(
    name: Annotated[str, typer.Argument(help="The department or recipient.")],
    json_output: JsonOption = False,
) -> None:
    """One caller with all its keys, active and revoked."""
    view = _registry().get(name)
    if json_output:
        emit_json(view.as_json())
        return
    _print_view(view)


@key_app.command("add")
@handle_errors
def key_add_command(
    name: Annotated[str, typer.Argument(help="The department or recipient.")],
    public_key: KeyFile,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add another active key (rotation: add the new key, switch the caller over, revoke the old one)."""
    key = _registry().add_key(name, _key(public_key), actor=_actor(actor))
    if json_output:
        emit_json({"department": name, **key.as_json()})
        return
    stdout.print(f"added key {key.kid} ({key.alg}) to {name}", highlight=False)


@key_app.command("revoke")
@handle_errors
def key_revoke_command(
    name: Annotated[str, typer.Argument(help="The department or recipient.")],
    kid: Annotated[str, typer.Argument(help="The key's kid (see `department show`).")],
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Revoke a key: refused from the next request on, in every server process. Final."""
    key = _registry().revoke_key(name, kid, actor=_actor(actor))
    if json_output:
        emit_json({"department": name, **key.as_json()})
        return
    stdout.print(f"revoked key {key.kid} of {name}", highlight=False)


def _print_view(view: DepartmentView) -> None:
    stdout.print(f"[bold]{view.name}[/bold] ({view.kind})", highlight=False)
    stdout.print(f"purposes: {', '.join(view.purposes) or '(any: the policies decide)'}", highlight=False)
    stdout.print(f"roles: {', '.join(view.roles) or '-'}", highlight=False)
    stdout.print(f"registered {view.created_at.isoformat()}, changed {view.updated_at.isoformat()}", highlight=False)
    for key in view.keys:
        stdout.print(f"  key {key.kid} {key.alg}: {_status(key)}", highlight=False)


def _status(key: KeyView) -> str:
    if key.revoked_at is not None:
        return f"revoked {key.revoked_at.isoformat()}"
    return f"{key.status} since {key.created_at.isoformat()}"
