"""Real servers on loopback: several uvicorn processes on one database refuse each other's replays and sign
with one key; `citygov client request` talks to them; SIGTERM lets requests in flight finish; `citygov serve`
starts, reports ready and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from governance.api.client import RequestSigner, generate_key, public_of, write_key_pair
from governance.api.departments import DepartmentRegistry
from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.audit.log import AuditLog
from governance.cli.main import app as cli
from governance.config import Settings
from governance.store.db import create_db_engine, init_schema
from governance.store.entities import add_entities, count_entities
from tests.governance.protect.support import KEY_V1, b64

ROOT = Path(__file__).resolve().parents[3]
BODY = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id", "powerState"],
                     "page_size": 4})
STANDIN = "tests.governance.api.standin_server:app"
CLEAN_EXIT = (0, -signal.SIGTERM)
"""After a graceful shutdown uvicorn re-raises the signal it caught, so the exit status may name SIGTERM."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGOV_")}
    env.update({"CITYGOV_DATA_DIR": str(data_dir), "CITYGOV_DATABASE_URL": database_url,
                "CITYGOV_MASTER_KEY": b64(KEY_V1), "CITYGOV_DEV_MODE": "false", "CITYGOV_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT), **extra})
    return env


@contextmanager
def running(command: list[str], env: dict[str, str], port: int, *, startup: float = 60) -> Iterator[
        subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + startup
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"server did not start (exit {proc.returncode}): {err[-2000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def uvicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", STANDIN, "--factory", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--timeout-graceful-shutdown", "10"]


def register(settings: Settings, name: str, out: Path | None = None) -> RequestSigner:
    engine = create_db_engine(settings.resolved_database_url())
    try:
        init_schema(engine)
        registry = DepartmentRegistry(engine, AuditLog.open(engine, settings.data_dir, settings=settings))
        key = generate_key("EdDSA")
        if out is not None:
            write_key_pair(key, out)
        registry.add(name, public_of(key), actor="test:officer")
        return RequestSigner(key, public_of(key).kid, name)
    finally:
        engine.dispose()


@pytest.fixture
def env(api_settings: Settings) -> dict[str, str]:
    return server_env(api_settings.data_dir, api_settings.resolved_database_url())


def test_two_server_processes_share_replays_registrations_and_the_signing_key(
        api_settings: Settings, env: dict[str, str]) -> None:
    ports = free_port(), free_port()
    with running(uvicorn_command(ports[0]), env, ports[0]), running(uvicorn_command(ports[1]), env, ports[1]):
        energy = register(api_settings, "energy")
        first, second = (f"http://127.0.0.1:{p}" for p in ports)
        url = f"{first}/v1/data/query"
        headers = {**energy.headers("POST", url, BODY)}
        response = httpx.post(url, content=BODY, headers=headers)
        assert response.status_code == 200 and len(response.json()["data"]) == 4
        keys = jwks_keys(httpx.get(f"{second}/.well-known/jwks.json").json())  # the other process's JWKS
        verify_response(response.headers[SIGNATURE_HEADER], response.content, keys)
        # the same token replayed to the other process (its htu names the first: rewrite nothing, just resend)
        replay_url = f"{second}/v1/data/query"
        token = energy.token("POST", replay_url, BODY)
        assert httpx.post(replay_url, content=BODY, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.post(replay_url, content=BODY, headers={"Authorization": f"Bearer {token}"}).status_code == 401
        resent = httpx.post(replay_url, content=BODY, headers=headers)  # signed for the first server's URL
        assert resent.status_code == 401
        metrics = httpx.get(f"{second}/metrics").text
        assert 'citygov_api_auth_failures_total{reason="jti_replayed"} 1' in metrics
        assert 'citygov_api_auth_failures_total{reason="url_mismatch"} 1' in metrics


def sqlite_settings(tmp_path: Path) -> Settings:
    """For the tests about processes rather than storage: one SQLite file."""
    return Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'store.db'}",
                    master_key=b64(KEY_V1), dev_mode=False)


def test_client_request_command_against_a_live_server(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    env = server_env(settings.data_dir, settings.resolved_database_url())
    port = free_port()
    with running(uvicorn_command(port), env, port):
        energy = register(settings, "energy", out=tmp_path / "keys")
        (tmp_path / "query.json").write_bytes(BODY)
        base = ["client", "request", "POST", "/v1/data/query", "--body", str(tmp_path / "query.json"),
                "--key", str(tmp_path / "keys" / "private.pem"), "--kid", energy.kid, "--issuer", "energy",
                "--url", f"http://127.0.0.1:{port}"]
        result = CliRunner().invoke(cli, [*base, "--json"])
        assert result.exit_code == 0, result.stderr
        answer = orjson.loads(result.stdout)
        assert answer["status"] == 200 and len(answer["body"]["data"]) == 4
        assert answer["signature"]["decision_id"] == "dec-0"
        result = CliRunner().invoke(cli, base)
        assert result.exit_code == 0 and "urn:ngsi-ld:Streetlight:SL-0" in result.stdout
        assert "signature valid" in result.stderr

        refused = CliRunner().invoke(cli, [*base[:-4], "--issuer", "transport", "--url", f"http://127.0.0.1:{port}"])
        assert refused.exit_code == 6 and "unauthenticated" in refused.stdout
        # a GET with a query string: signed as sent (403, not 401: the signature and htu checked out)
        audit = CliRunner().invoke(cli, ["client", "request", "GET", "/v1/audit/entries?limit=2&action=x y",
                                         *base[6:]])
        assert audit.exit_code == 6 and "auditor_role_required" in audit.stdout
    closed = CliRunner().invoke(cli, [*base[:-1], f"http://127.0.0.1:{free_port()}"])
    assert closed.exit_code == 4


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    env = server_env(settings.data_dir, settings.resolved_database_url(), CITYGOV_TEST_STANDIN_DELAY="1.5")
    port = free_port()
    with running(uvicorn_command(port), env, port) as proc:
        energy = register(settings, "energy")
        url = f"http://127.0.0.1:{port}/v1/data/query"
        outcome: dict[str, object] = {}

        def slow_request() -> None:
            response = httpx.post(url, content=BODY, headers=energy.headers("POST", url, BODY), timeout=30)
            outcome["status"] = response.status_code

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert outcome.get("status") == 200
        assert proc.wait(timeout=20) in CLEAN_EXIT
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def _expired_row() -> dict[str, object]:
    now = datetime.now(UTC)
    entity = {"id": "urn:ngsi-ld:NoiseLevelObserved:expired", "type": "NoiseLevelObserved", "LAeq": 50.0}
    return {"entity_id": entity["id"], "entity_type": "NoiseLevelObserved", "dataset": "monitoring.noise",
            "observed_at": now - timedelta(days=400), "data": entity, "adapter": "test", "adapter_version": "1",
            "source": "test", "received_at": now, "stored_at": now, "raw_sha256": "0" * 64,
            "message_fingerprint": "1" * 64, "removed_fields": [], "subject": None,
            "retain_until": now - timedelta(days=1), "policy_revision": None}


@pytest.mark.parametrize("workers", [1, 2])
def test_citygov_serve_starts_ready_and_stops(tmp_path: Path, workers: int) -> None:
    pytest.importorskip("governance.sharing.query", reason="the query layer (sharing) is not in this tree yet")
    settings = sqlite_settings(tmp_path)
    env = server_env(settings.data_dir, settings.resolved_database_url())
    port = free_port()
    command = [str(Path(sys.executable).with_name("citygov")), "serve", "--port", str(port), "--workers",
               str(workers)]
    engine = create_db_engine(settings.resolved_database_url())
    init_schema(engine)
    with engine.begin() as conn:  # one row past its retention deadline: every worker's sweeper deletes it at start
        add_entities(conn, [_expired_row()])
    with running(command, env, port, startup=120) as proc:
        deadline = time.monotonic() + 30
        while count_entities(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count_entities(engine) == 0, "the server runs the retention sweep (one worker or several)"
        engine.dispose()
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["policy_revision"]
        assert httpx.get(f"http://127.0.0.1:{port}/.well-known/jwks.json").json()["keys"][0]["alg"] == "EdDSA"
        unsigned = httpx.post(f"http://127.0.0.1:{port}/v1/data/query", content=BODY)
        assert unsigned.status_code == 401 and SIGNATURE_HEADER.lower() in unsigned.headers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in CLEAN_EXIT
