"""``citygov keys``: master key versions in use, rotation (a new version) and re-wrapping onto it.

Rotation in three steps (docs/protection.md): ``keys rotate`` adds a version — new keys are wrapped under it
at once; ``keys rewrap`` moves every stored key forward; when ``keys status`` shows an old version unused,
remove it from the configuration. Key bytes are never printed — except the new entry itself, and only when
asked with ``--print-entry`` (the master key then lives in an environment variable the operator sets).

Exit codes as everywhere: 0 done; 1 failure; 2 usage or configuration; 4 database unreachable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, func, select

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.cli.common import console, emit_json, handle_errors, settings, stdout, store
from governance.config import Settings
from governance.errors import InvalidRequestError
from governance.protect.keyring import Keyring
from governance.protect.keystore import SubjectKeystore
from governance.protect.masterkey import MasterKeys, add_key_version, describe, dev_key_path, new_key_entry
from governance.protect.rotation import rewrap_all
from governance.protect.subject_keys import SubjectKeys
from governance.protect.tables import ProtectKey, SubjectKey

app = typer.Typer(
    help="Master key versions: status, rotate (add a version), rewrap (move stored keys onto the newest).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ActorOption = Annotated[str | None, typer.Option(help="Who does this (default: cli:<user>).")]
ROTATE = "keys.rotate"
REWRAP = "keys.rewrap"
_STORED = ProtectKey.__table__  # type: ignore[attr-defined]
_SUBJECTS = SubjectKey.__table__  # type: ignore[attr-defined]


def _actor(actor: str | None) -> str:
    return actor or f"cli:{os.environ.get('USER') or 'unknown'}"


def key_usage(engine: Engine, master: MasterKeys) -> dict[str, Any]:
    """Which master key versions wrap what: stored secrets and live subject keys by version, tombstones."""
    with engine.connect() as conn:
        stored = {int(v): int(n) for v, n in conn.execute(
            select(_STORED.c.kek_version, func.count()).group_by(_STORED.c.kek_version))}
        live = {int(v): int(n) for v, n in conn.execute(
            select(_SUBJECTS.c.key_version, func.count()).where(_SUBJECTS.c.destroyed_at.is_(None))
            .group_by(_SUBJECTS.c.key_version))}
        destroyed = int(conn.execute(select(func.count()).select_from(_SUBJECTS)
                                     .where(_SUBJECTS.c.destroyed_at.is_not(None))).scalar_one())
    used = set(stored) | set(live)
    return {
        "master": describe(master),
        "stored_keys": {str(v): n for v, n in sorted(stored.items())},
        "subject_keys": {str(v): n for v, n in sorted(live.items())},
        "erased_subjects": destroyed,
        "to_rewrap": sum(n for v, n in stored.items() if v != master.current)
        + sum(n for v, n in live.items() if v != master.current),
        "retirable": [v for v in master.versions if v != master.current and v not in used],
        "missing": sorted(used - set(master.versions)),
    }


def _audit(engine: Engine, config: Settings, keyring: Keyring, event: AuditEvent) -> int:
    return AuditLog.open(engine, config.data_dir, keyring=keyring).append([event]).first_seq


@app.command("status")
@handle_errors
def status_command(json_output: JsonOption = False) -> None:
    """Master key versions configured, and how many stored and subject keys each one wraps."""
    config = settings()
    engine = store(config)
    usage = key_usage(engine, MasterKeys.from_settings(config))
    if json_output:
        emit_json(usage)
        return
    master = usage["master"]
    stdout.print(f"master key versions {master['versions']} from {master['source']}; "
                 f"v{master['current']} wraps everything new", highlight=False)
    table = Table(title="keys by master key version")
    for column in ("version", "stored keys", "subject keys (live)"):
        table.add_column(column, justify="right")
    versions = sorted({int(v) for v in usage["stored_keys"]} | {int(v) for v in usage["subject_keys"]}
                      | set(master["versions"]))
    for version in versions:
        mark = " (current)" if version == master["current"] else ""
        mark += " (NOT CONFIGURED)" if version in usage["missing"] else ""
        table.add_row(f"v{version}{mark}", str(usage["stored_keys"].get(str(version), 0)),
                      str(usage["subject_keys"].get(str(version), 0)))
    stdout.print(table)
    stdout.print(f"erased subjects (tombstones): {usage['erased_subjects']}", highlight=False)
    if usage["to_rewrap"]:
        console.print(f"{usage['to_rewrap']} keys are wrapped under an older version: run `citygov keys rewrap`")
    if usage["retirable"]:
        console.print(f"no key uses {', '.join(f'v{v}' for v in usage['retirable'])}: it can be removed")
    if usage["missing"]:
        console.print(f"[red]keys are wrapped under versions that are not configured: {usage['missing']}[/red]")


@app.command("rotate")
@handle_errors
def rotate_command(
    out: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False, help="With CITYGOV_MASTER_KEY: write the new 'v<N>:<key>' entry to this file (0600).")
    ] = None,
    print_entry: Annotated[bool, typer.Option(
        "--print-entry", help="With CITYGOV_MASTER_KEY: print the new entry on stdout (it is key material).")] = False,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a new master key version: appended to the key file, or issued as an entry for CITYGOV_MASTER_KEY.

    New keys are wrapped under the new version as soon as it is configured; then run `citygov keys rewrap`.
    """
    config = settings()
    engine = store(config)
    master = MasterKeys.from_settings(config)  # the current configuration must load before it is extended
    keyring = Keyring(master, engine)
    version = master.current + 1
    result: dict[str, Any] = {"version": version, "previous": master.current}
    if config.master_key is not None:
        if out is None and not print_entry:
            raise InvalidRequestError(
                "the master key comes from CITYGOV_MASTER_KEY: give --out FILE (the new entry is written there, "
                "0600) or --print-entry, then prepend the entry to CITYGOV_MASTER_KEY ('v2:…,v1:…')")
        entry = new_key_entry(version)
        if out is not None:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(entry + "\n")
        result.update(where="environment", entry_file=str(out) if out else None, active=False)
    else:
        path = config.master_key_file or dev_key_path(config.data_dir)
        version = add_key_version(path)
        result.update(version=version, where="key-file", key_file=str(path), active=True)
    result["audit_seq"] = _audit(engine, config, keyring, AuditEvent(
        actor=_actor(actor), action=ROTATE, decision="added" if result["active"] else "issued",
        refs={"version": version, "previous": master.current, "where": result["where"]}))
    if print_entry and config.master_key is not None:
        stdout.print(entry, highlight=False, soft_wrap=True)
        return
    if json_output:
        emit_json(result)
        return
    if result["active"]:
        stdout.print(f"added master key v{version} to {result['key_file']}: new keys are wrapped under it now",
                     highlight=False)
    else:
        stdout.print(f"new master key entry v{version} written to {out} (mode 0600)", highlight=False)
        console.print(f"prepend it to CITYGOV_MASTER_KEY (CITYGOV_MASTER_KEY=\"$(cat {out}),<current entries>\") "
                      "and restart every process, then delete the file")
    console.print("next: `citygov keys rewrap` moves the stored keys onto it")


@app.command("rewrap")
@handle_errors
def rewrap_command(actor: ActorOption = None, json_output: JsonOption = False) -> None:
    """Re-wrap every stored key and live subject key under the newest master key version (data is untouched)."""
    config = settings()
    engine = store(config)
    keyring = Keyring.from_settings(config, engine)
    subject_keys = SubjectKeys(engine, keyring.master, SubjectKeystore.from_settings(config))
    todo = key_usage(engine, keyring.master)["to_rewrap"]
    with Progress(
        SpinnerColumn(), TextColumn("[bold]re-wrapping under v{task.fields[version]}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=json_output or not console.is_terminal,
    ) as progress:
        task = progress.add_task("rewrap", total=todo, version=keyring.master.current)
        report = rewrap_all(keyring, subject_keys)
        progress.update(task, completed=todo)
    report["unusable"] = len(report["unusable"])  # pseudonyms stay out of output and audit: the count is enough
    report["remaining"] = {str(v): n for v, n in report["remaining"].items()}
    report["audit_seq"] = _audit(engine, config, keyring, AuditEvent(
        actor=_actor(actor), action=REWRAP, decision="rewrapped",
        refs={k: v for k, v in report.items() if k != "audit_seq"}))
    if json_output:
        emit_json(report)
        return
    stdout.print(f"re-wrapped {report['stored_keys']} stored keys and {report['rewrapped']} subject keys under "
                 f"master key v{report['version']}", highlight=False)
    stdout.print(f"keys per version now: {report['remaining']}", highlight=False)
    if report["unusable"]:
        console.print(f"[yellow]{report['unusable']} subject keys could not be opened (keystore secret missing: "
                      "an interrupted erasure, or a lost keystore) and stay on their version[/yellow]")
