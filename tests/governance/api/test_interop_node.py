"""Interoperability: a department signing with node's `jose` (nothing of ours) is accepted, and node verifies
the API's signed answer. The kid jose computes (RFC 7638) is the kid the registry computes.

npm's `jose` is installed once into ~/.cache/citygov-tests/node (or $CITYGOV_TEST_CACHE/node). Without node or
npm the test is skipped — unless CITYGOV_REQUIRE_SERVICES is set, then it fails.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest
from sqlalchemy import Engine

from governance.api.jose import parse_public_key
from governance.api.signing import SIGNATURE_HEADER
from governance.config import Settings
from governance.store.db import create_db_engine, init_schema
from tests.conftest import REQUIRE_SERVICES
from tests.governance.api.support import QUERY_PATH, QUERY_URL, ApiHarness, audit_entries, harness
from tests.governance.protect.support import KEY_V1, b64

SCRIPT = Path(__file__).with_name("node") / "citygov-jose.mjs"
JOSE_VERSION = "6"


class RealClock:
    def __call__(self) -> Any:
        from datetime import UTC, datetime

        return datetime.now(UTC)


def _unavailable(why: str) -> NoReturn:
    if REQUIRE_SERVICES:
        pytest.fail(f"node interop unavailable ({why}); CITYGOV_REQUIRE_SERVICES is set")
    pytest.skip(f"node interop unavailable ({why})")


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node or npm is not installed")
    base = Path(os.environ.get("CITYGOV_TEST_CACHE", Path.home() / ".cache" / "citygov-tests"))
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        base = tmp_path_factory.mktemp("citygov-tests")
    target = base / "node"
    target.mkdir(exist_ok=True)
    if not (target / "node_modules" / "jose" / "package.json").exists():
        try:
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(target),
                            f"jose@{JOSE_VERSION}"], check=True, capture_output=True, timeout=300)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            _unavailable(f"npm install jose failed: {exc}")
    shutil.copyfile(SCRIPT, target / SCRIPT.name)  # ESM resolves packages next to the script
    return target


def node(node_dir: Path, command: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(["node", str(node_dir / SCRIPT.name)], input=orjson.dumps(command), capture_output=True,
                          timeout=60, check=True)
    value = orjson.loads(done.stdout)
    assert isinstance(value, dict)
    return value


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ApiHarness]:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'store.db'}",
                        master_key=b64(KEY_V1), dev_mode=False)
    engine: Engine = create_db_engine(settings.resolved_database_url())
    init_schema(engine)
    try:
        yield from harness(settings, engine, RealClock())  # type: ignore[arg-type]
    finally:
        engine.dispose()


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_a_request_signed_by_node_jose_is_accepted_and_node_verifies_the_answer(
        node_dir: Path, live: ApiHarness, alg: str) -> None:
    body = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id"], "page_size": 3})
    signed = node(node_dir, {"op": "sign", "alg": alg, "method": "post", "url": QUERY_URL, "body": body.decode(),
                             "issuer": "energy", "audience": "citygov"})
    registered = parse_public_key(orjson.dumps(signed["jwk"]))
    assert registered.kid == signed["kid"] and registered.alg == alg  # jose's thumbprint is ours
    live.registry.add("energy", registered, actor="test:officer")

    response = live.client.post(QUERY_PATH, content=body, headers={"Authorization": f"Bearer {signed['token']}",
                                                                   "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 3
    assert audit_entries(live.audit)[-1]["refs"]["kid"] == signed["kid"]

    jwks = live.client.get("/.well-known/jwks.json").json()
    verified = node(node_dir, {"op": "verify", "jwks": jwks, "signature": response.headers[SIGNATURE_HEADER],
                               "body_b64": base64.b64encode(response.content).decode()})
    assert verified["ok"] is True and verified["header"]["decision_id"] == "dec-0"
    tampered = node(node_dir, {"op": "verify", "jwks": jwks, "signature": response.headers[SIGNATURE_HEADER],
                               "body_b64": base64.b64encode(response.content.replace(b"SL-0", b"SL-9")).decode()})
    assert tampered["ok"] is False

    # the same node token sent again is a replay
    again = live.client.post(QUERY_PATH, content=body, headers={"Authorization": f"Bearer {signed['token']}"})
    assert again.status_code == 401
    assert audit_entries(live.audit)[-1]["reasons"] == ["jti_replayed"]
