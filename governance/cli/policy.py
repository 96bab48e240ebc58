"""``citygov policy test|eval|revision|bundle|publish|replay``: edit, test, evaluate and publish policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError

from governance.assembly import current_bundle
from governance.cli.common import EXIT_FAILURE, EXIT_UNAVAILABLE, console, emit_json, handle_errors, settings, stdout
from governance.cli.common import store as store_engine
from governance.cli.ingest import JsonOption
from governance.errors import ConfigurationError, NotFoundError
from governance.policy.bundle import BundleStore, load_folder
from governance.policy.engine import make_engine
from governance.policy.errors import PolicyEngineError
from governance.policy.model import Decision, DecisionRecord, PolicyInput, Stage
from governance.policy.replay import replay_record
from governance.policy.testing import run_tests

app = typer.Typer(help="Rego policies: test, evaluate, publish, replay recorded decisions.", no_args_is_help=True)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Policies folder (default CITYGOV_POLICY_DIR, else the shipped policies/).",
                 exists=True, file_okay=False),
]


def _read_json(path: Path, what: str) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigurationError(f"{what} {path} is not readable JSON: {exc}") from exc


def _print_decision(decision: Decision) -> None:
    verdict = "[green]allow[/green]" if decision.allow else "[red]deny[/red]"
    stdout.print(f"{verdict}  (revision {decision.revision[:12]})", highlight=False, soft_wrap=True)
    for reason in decision.reasons:
        stdout.print(f"  reason      {reason.code}: {reason.detail}", markup=False, highlight=False, soft_wrap=True)
    for obligation in decision.obligations:
        body = orjson.dumps(obligation.model_dump(exclude={"kind"})).decode()
        stdout.print(f"  obligation  {obligation.kind} {body}", markup=False, highlight=False, soft_wrap=True)
    for flag in decision.flags:
        stdout.print(f"  flag        {flag}", markup=False, highlight=False, soft_wrap=True)


@app.command("test")
@handle_errors
def policy_test_command(directory: DirOption = None, json_output: JsonOption = False) -> None:
    """Run every *_test.rego on the embedded engine; exit 1 when a test fails."""
    folder = directory or settings().policy_dir
    report = run_tests(folder)
    if json_output:
        emit_json({"revision": report.revision, "passed": report.passed,
                   "results": [r.__dict__ for r in report.results]})
    else:
        marks = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "error": "[red]ERROR[/red]",
                 "skip": "[yellow]SKIP[/yellow]"}
        for r in report.results:
            detail = f" — {r.detail}" if r.detail else ""
            stdout.print(f"{marks[r.outcome]} {r.package}.{r.name} ({r.duration_ms:.1f} ms){detail}", highlight=False,
                         soft_wrap=True)
        stdout.print(f"{report.count('pass')} passed, {report.count('fail')} failed, {report.count('error')} errors, "
                     f"{report.count('skip')} skipped; revision {report.revision[:12]}",
                     highlight=False, soft_wrap=True)
    if not report.passed:
        raise typer.Exit(EXIT_FAILURE)


@app.command("eval")
@handle_errors
def eval_command(
    stage: Annotated[Stage, typer.Option(help="collection, storage, use or sharing.")],
    input_file: Annotated[Path, typer.Option("--input", help="The policy input (JSON).", exists=True,
                                             dir_okay=False)],
    revision: Annotated[str | None, typer.Option(help="A stored revision instead of the active bundle.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Evaluate one input on the configured engine and print the decision (nothing is recorded)."""
    document = _read_json(input_file, "input")
    if not isinstance(document, dict):
        raise ConfigurationError(f"input {input_file} must be a JSON object")
    if document.setdefault("stage", stage.value) != stage.value:
        raise ConfigurationError(f"input {input_file} is for stage {document['stage']}, not {stage.value}")
    try:
        policy_input = PolicyInput.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(f"input {input_file}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    config = settings()
    bundle = BundleStore.for_settings(config).load(revision) if revision else None
    decision = make_engine(config, bundle).decide(policy_input)
    if json_output:
        emit_json(decision.model_dump(mode="json"))
    else:
        _print_decision(decision)


@app.command("revision")
@handle_errors
def revision_command(json_output: JsonOption = False) -> None:
    """Print the revision every stage decides with now: policies + agreements register (kept in the store)."""
    config = settings()
    bundle = current_bundle(config, store_engine(config))
    stored = BundleStore.for_settings(config).path(bundle.revision)
    if json_output:
        emit_json({"revision": bundle.revision, "origin": bundle.origin, "stored": str(stored),
                   "engine": config.policy_engine})
    else:
        stdout.print(bundle.revision, highlight=False)
        console.print(f"from {bundle.origin}; stored at {stored}; engine {config.policy_engine}")


@app.command("bundle")
@handle_errors
def bundle_command(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the bundle to (must not exist or be empty).",
                                      file_okay=False)],
    directory: DirOption = None,
) -> None:
    """Write the bundle of the policies folder (files + manifest.json) to a directory."""
    if out.exists() and any(out.iterdir()):
        raise ConfigurationError(f"{out} is not empty")
    bundle = load_folder(directory or settings().policy_dir)
    bundle.write(out)
    stdout.print(bundle.revision, highlight=False)
    console.print(f"bundle written to {out}")


@app.command("publish")
@handle_errors
def publish_command(directory: DirOption = None, json_output: JsonOption = False) -> None:
    """Test the policies, keep the bundle in the store and, with CITYGOV_POLICY_ENGINE=opa, push it to OPA."""
    config = settings()
    folder = directory or config.policy_dir
    report = run_tests(folder)
    if not report.passed:
        console.print(f"[red]not published:[/red] {report.count('fail') + report.count('error')} policy tests fail "
                      "(run `citygov policy test`)")
        raise typer.Exit(EXIT_FAILURE)
    bundle = load_folder(folder)
    path = BundleStore.for_settings(config).save(bundle)
    pushed = None
    if config.policy_engine == "opa":
        from governance.policy.opa import OpaEngine

        engine = make_engine(config, bundle)
        assert isinstance(engine, OpaEngine)
        try:
            engine.publish()
        except PolicyEngineError as exc:
            console.print(f"[red]unavailable:[/red] {exc}")
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        pushed = engine.url
    if json_output:
        emit_json({"revision": bundle.revision, "stored": str(path), "opa": pushed, "tests": len(report.results)})
    else:
        stdout.print(bundle.revision, highlight=False)
        where = f"; pushed to {pushed}" if pushed else ""
        console.print(f"{len(report.results)} tests pass; stored at {path}{where}")


@app.command("replay")
@handle_errors
def replay_command(
    audit_seq: Annotated[int | None, typer.Argument(help="Sequence number of a policy.decision audit entry.")] = None,
    record_file: Annotated[Path | None, typer.Option("--record", help="A decision record {revision, stage, input, "
                                                     "decision} (JSON).", exists=True, dir_okay=False)] = None,
    json_output: JsonOption = False,
) -> None:
    """Re-evaluate a logged decision against its recorded revision; exit 1 when it does not match."""
    if (audit_seq is None) == (record_file is None):
        raise ConfigurationError("give either an audit sequence number or --record FILE")
    if audit_seq is not None:
        record = _record_from_audit(audit_seq)
    else:
        assert record_file is not None
        try:
            record = DecisionRecord.model_validate(_read_json(record_file, "decision record"))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigurationError(
                f"decision record {record_file}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    result = replay_record(record, BundleStore.for_settings(settings()))
    if json_output:
        emit_json({"matches": result.matches, "note": result.note, "revision": record.revision,
                   "recorded": result.recorded.model_dump(mode="json"),
                   "replayed": result.replayed.model_dump(mode="json")})
    else:
        mark = "[green]matches[/green]" if result.matches else "[red]differs[/red]"
        stdout.print(f"{mark}: {result.note}", highlight=False)
        _print_decision(result.replayed)
    if not result.matches:
        raise typer.Exit(EXIT_FAILURE)


def _record_from_audit(seq: int) -> DecisionRecord:
    """The decision logged as audit entry ``seq``."""
    import orjson

    from governance.audit.decisions import record_from_entry
    from governance.audit.query import get_entry
    from governance.cli.common import store

    engine = store(settings())
    with engine.connect() as conn:
        stored = get_entry(conn, seq)
    if stored is None:
        raise NotFoundError(f"no audit entry #{seq}")
    try:
        return record_from_entry(orjson.loads(stored.data))
    except (ValueError, ValidationError) as exc:
        raise ConfigurationError(f"audit entry #{seq} cannot be replayed: {exc}") from None
