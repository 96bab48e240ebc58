"""``citygov serve``: the signed data API on uvicorn (SQLite and the in-process policy engine by default).

One worker serves from this process; ``--workers N`` starts N processes that each build the app
(:func:`governance.api.app.app_from_env`) and share the database — replay protection, revocations and
the audit log hold across them. SIGTERM or Ctrl-C stops taking connections, lets requests in flight
finish (up to ``--graceful-timeout`` seconds), then exits.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from governance.cli.common import console, handle_errors, settings, store


@handle_errors
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (each with its own pool).")] = 1,
    graceful_timeout: Annotated[int, typer.Option(min=0, help="Seconds requests in flight get at shutdown.")] = 20,
    proxy_headers: Annotated[bool, typer.Option(
        help="Trust X-Forwarded-Proto/For from --forwarded-allow-ips (behind a reverse proxy).")] = False,
    forwarded_allow_ips: Annotated[str, typer.Option(help="Proxies trusted for forwarded headers.")] = "127.0.0.1",
) -> None:
    """Serve the signed data API: /v1/data/query, /v1/audit, /.well-known/jwks.json, /healthz, /readyz,
    /metrics and the OpenAPI docs at /docs."""
    import uvicorn

    from governance.api.app import create_app
    from governance.api.tables import ensure_tables

    config = settings()
    engine = store(config)  # tables once, here, before any worker starts
    ensure_tables(engine)
    engine.dispose()
    if not _loopback(host) and not config.api_public_url:
        console.print("[yellow]warning:[/yellow] listening beyond loopback without CITYGOV_API_PUBLIC_URL: signed "
                      "URLs are checked against each request's Host header; set the public URL in production")
    if config.dev_mode and not _loopback(host):
        console.print("[yellow]warning:[/yellow] CITYGOV_DEV_MODE is on (generated keys); turn it off in production")
    options = {"host": host, "port": port, "log_config": None, "access_log": False, "server_header": False,
               "timeout_graceful_shutdown": graceful_timeout, "proxy_headers": proxy_headers,
               "forwarded_allow_ips": forwarded_allow_ips}
    console.print(f"citygov API on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}); docs at /docs",
                  highlight=False)
    if workers == 1:
        # as app_from_env builds each worker's app: the retention sweep on its schedule, startup objects frozen
        uvicorn.run(create_app(config, retention=True, freeze_startup_objects=True), **options)  # type: ignore[arg-type]
    else:
        uvicorn.run("governance.api.app:app_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
