"""What every CLI command shares: settings, the store, output in text or JSON, exit codes.

Exit codes: 0 done; 1 unexpected failure; 2 bad usage or configuration; 3 done but records were
quarantined and ``--strict`` was given; 4 a service (database, broker) is unreachable — try again;
5 audit verification failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from governance.config import Settings
from governance.errors import (
    CitygovError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    RetriableError,
    VerificationError,
)
from governance.ingest.pipeline import Pipeline
from governance.store.db import open_store

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_QUARANTINED = 3
EXIT_UNAVAILABLE = 4
EXIT_VERIFICATION_FAILED = 5

console = Console(stderr=True)
"""Progress, errors and notices: stderr, so stdout stays clean for ``--json`` and exports."""
stdout = Console()
P = ParamSpec("P")
R = TypeVar("R")


def settings() -> Settings:
    return Settings()


def store(config: Settings) -> Engine:
    try:
        return open_store(config)
    except OperationalError as exc:
        raise RetriableError(f"database unreachable: {exc.orig}") from exc


def governed_pipeline(engine: Engine, config: Settings) -> Pipeline:
    """The collection pipeline as every command runs it: policy, consent and the audit log around it."""
    from governance.assembly import build_pipeline

    return build_pipeline(engine, config)


def emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode("utf-8") + "\n")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map citygov errors to a clear message and a meaningful exit code (no tracebacks for users)."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (ConfigurationError, NotFoundError, InvalidRequestError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_USAGE) from None
        except VerificationError as exc:
            console.print(f"[red]VERIFICATION FAILED:[/red] {exc}")
            raise typer.Exit(EXIT_VERIFICATION_FAILED) from None
        except RetriableError as exc:
            console.print(f"[red]unavailable:[/red] {exc}")
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        except OperationalError as exc:
            console.print(f"[red]unavailable:[/red] database error: {exc.orig}")
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        except CitygovError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper
