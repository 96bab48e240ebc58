"""The ``citygov`` command: data governance for a smart city, from the terminal."""

from __future__ import annotations

import typer

from governance import __version__
from governance.cli import agreement, audit, consent, demo, ingest, policy, quarantine
from governance.cli import client as client_cli
from governance.cli import department as department_cli
from governance.cli import keys as keys_cli
from governance.cli import retention as retention_cli
from governance.cli import serve as serve_cli
from governance.cli import subject as subject_cli
from governance.config import Settings
from governance.logs import configure_logging

app = typer.Typer(
    name="citygov",
    help="Governance and secure sharing of smart-city data: adapters, standard schemas, quarantine.\n\n"
    "Exit codes: 0 done; 1 failure; 2 bad usage or configuration; 3 records quarantined (--strict); "
    "4 database or broker unreachable; 5 audit verification failed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"citygov {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Configure logging from CITYGOV_LOG_LEVEL before any command runs."""
    configure_logging(Settings().log_level)


app.command("adapters")(ingest.adapters_command)
app.command("ingest")(ingest.ingest_command)
app.command("listen")(ingest.listen_command)
app.command("entities")(ingest.entities_command)
app.command("demo")(demo.demo_command)
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(policy.app, name="policy")
app.add_typer(consent.app, name="consent")
app.add_typer(audit.app, name="audit")
app.add_typer(agreement.app, name="agreement")
app.command("serve")(serve_cli.serve_command)
app.add_typer(department_cli.app, name="department")
app.add_typer(client_cli.app, name="client")
app.add_typer(retention_cli.app, name="retention")
app.add_typer(subject_cli.app, name="subject")
app.add_typer(keys_cli.app, name="keys")


if __name__ == "__main__":
    app()
