"""The registry of callers and keys, on SQLite and PostgreSQL: every change audited, conflicts explained,
revocation final; and the `citygov department` / `citygov client` commands end to end."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from governance.api.client import generate_key, public_of
from governance.api.departments import DEPARTMENT_CHANGE, DepartmentRegistry
from governance.api.signing import ResponseSigner
from governance.audit.log import AuditLog
from governance.cli.main import app
from governance.errors import InvalidRequestError, NotFoundError
from tests.governance.api.support import audit_entries
from tests.governance.protect.support import KEY_V1, Clock, b64

runner = CliRunner()


@pytest.fixture
def registry(engine: Engine, data_dir: Path, clock: Clock) -> DepartmentRegistry:
    return DepartmentRegistry(engine, AuditLog.open(engine, data_dir, clock=clock), clock=clock)


def test_add_keys_revoke_and_read_back_with_one_audit_entry_each(registry: DepartmentRegistry,
                                                                 clock: Clock) -> None:
    first, second = public_of(generate_key("EdDSA")), public_of(generate_key("ES256"))
    view = registry.add("transport", first, purposes=["transport", "transport"], roles=["analyst"],
                        actor="officer:anna")
    assert (view.name, view.kind, view.purposes, view.roles) == ("transport", "department", ("transport",),
                                                                 ("analyst",))
    clock.advance(minutes=1)
    registry.add_key("transport", second, actor="officer:anna")
    clock.advance(minutes=1)
    revoked = registry.revoke_key("transport", first.kid, actor="officer:ben")
    assert revoked.status == "revoked" and revoked.revoked_at == clock()
    view = registry.get("transport")
    assert [(k.kid, k.status) for k in view.keys] == [(first.kid, "revoked"), (second.kid, "active")]
    assert [k.kid for k in view.active_keys] == [second.kid]
    looked_up = registry.lookup_key(second.kid)
    assert looked_up is not None and looked_up.alg == "ES256" and looked_up.department == "transport"
    assert registry.lookup_key(first.kid).status == "revoked"  # type: ignore[union-attr]
    assert registry.lookup_key("unknown") is None

    entries = [e for e in audit_entries(registry.audit) if e["action"] == DEPARTMENT_CHANGE]
    assert [(e["actor"], e["refs"]["change"], e["refs"].get("kid")) for e in entries] == [
        ("officer:anna", "add", first.kid), ("officer:anna", "key.add", second.kid),
        ("officer:ben", "key.revoke", first.kid)]
    assert "BEGIN" not in orjson.dumps(entries).decode()


def test_conflicts_and_bad_input_are_explained(registry: DepartmentRegistry) -> None:
    key = public_of(generate_key("EdDSA"))
    registry.add("energy", key, actor="officer")
    with pytest.raises(InvalidRequestError, match="already registered"):
        registry.add("energy", public_of(generate_key("EdDSA")), actor="officer")
    with pytest.raises(InvalidRequestError, match="already registered to 'energy'"):
        registry.add("transport", key, actor="officer")
    with pytest.raises(InvalidRequestError, match="already registered to 'energy'"):
        registry.add_key("energy", key, actor="officer")
    registry.revoke_key("energy", key.kid, actor="officer")
    with pytest.raises(InvalidRequestError, match="already revoked"):
        registry.revoke_key("energy", key.kid, actor="officer")
    with pytest.raises(InvalidRequestError, match="revoked key cannot come back"):
        registry.add_key("energy", key, actor="officer")
    with pytest.raises(NotFoundError):
        registry.add_key("nobody", public_of(generate_key("EdDSA")), actor="officer")
    with pytest.raises(NotFoundError):
        registry.revoke_key("transport", key.kid, actor="officer")
    for name in ("Energy", "", "a" * 65, "-x", "x y", "x/y"):
        with pytest.raises(InvalidRequestError, match="not valid"):
            registry.add(name, public_of(generate_key("EdDSA")), actor="officer")
    with pytest.raises(InvalidRequestError, match="kind"):
        registry.add("x", public_of(generate_key("EdDSA")), kind="admin", actor="officer")
    with pytest.raises(InvalidRequestError, match="purpose"):
        registry.add("x", public_of(generate_key("EdDSA")), purposes=["Has Space"], actor="officer")
    assert [v.name for v in registry.all()] == ["energy"]
    assert len([e for e in audit_entries(registry.audit) if e["action"] == DEPARTMENT_CHANGE]) == 2


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Path:
    monkeypatch.setenv("CITYGOV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CITYGOV_DATABASE_URL", database_url)
    monkeypatch.setenv("CITYGOV_MASTER_KEY", b64(KEY_V1))
    monkeypatch.setenv("CITYGOV_DEV_MODE", "false")
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_department_and_client_keygen_commands(env: Path) -> None:
    code, out, _ = invoke("client", "keygen", "--out", str(env / "transport"), "--json")
    assert code == 0
    made = json.loads(out)
    assert stat.S_IMODE((env / "transport" / "private.pem").stat().st_mode) == 0o600
    assert invoke("client", "keygen", "--out", str(env / "transport"))[0] == 2  # never overwrites a key
    code, out, _ = invoke("client", "keygen", "--alg", "ES256", "--out", str(env / "second"))
    assert code == 0 and len(out.strip()) == 43
    second_kid = out.strip()

    code, out, _ = invoke("department", "add", "transport", "--public-key", made["public_pem"], "--purposes",
                          "transport,mobility", "--role", "analyst", "--actor", "officer:anna", "--json")
    assert code == 0
    added = json.loads(out)
    assert added["purposes"] == ["transport", "mobility"] and added["roles"] == ["analyst"]
    assert added["keys"][0]["kid"] == made["kid"] and added["keys"][0]["status"] == "active"

    code, out, _ = invoke("department", "key", "add", "transport", "--public-key",
                          str(env / "second" / "public.jwk.json"), "--json")
    assert code == 0 and json.loads(out)["kid"] == second_kid and json.loads(out)["alg"] == "ES256"
    code, out, _ = invoke("department", "key", "revoke", "transport", made["kid"], "--json")
    assert code == 0 and json.loads(out)["status"] == "revoked"
    assert invoke("department", "key", "revoke", "transport", made["kid"])[0] == 2
    assert invoke("department", "key", "revoke", "transport", "nope")[0] == 2

    code, out, _ = invoke("department", "show", "transport", "--json")
    assert code == 0 and [k["status"] for k in json.loads(out)["keys"]] == ["revoked", "active"]
    code, out, _ = invoke("department", "list", "--json")
    assert code == 0 and [d["name"] for d in json.loads(out)] == ["transport"]
    code, out, _ = invoke("department", "list")
    assert code == 0 and "transport" in out and "ES256" in out
    assert invoke("department", "show", "nobody")[0] == 2

    code, _, err = invoke("department", "add", "leaky", "--public-key", str(env / "transport" / "private.pem"))
    assert code == 2 and "private key" in err
    code, out, _ = invoke("audit", "log", "--action", "department.change", "--json")
    assert code == 0
    assert [(e["actor"], e["refs"]["change"]) for e in json.loads(out)] == [
        ("officer:anna", "add"), (f"cli:{os.environ.get('USER') or 'unknown'}", "key.add"),
        (f"cli:{os.environ.get('USER') or 'unknown'}", "key.revoke")]


def test_client_verify_command(env: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = ResponseSigner(Ed25519PrivateKey.generate())
    (env / "jwks.json").write_bytes(orjson.dumps(signer.jwks()))
    body = env / "body.json"
    body.write_bytes(b'{"data":[]}')
    signature = signer.sign(body.read_bytes(), iat=1)
    code, out, _ = invoke("client", "verify", str(body), "--signature", signature, "--jwks", str(env / "jwks.json"),
                          "--json")
    assert code == 0 and json.loads(out)["valid"] is True
    body.write_bytes(b'{"data":[1]}')
    code, _, err = invoke("client", "verify", str(body), "--signature", signature, "--jwks", str(env / "jwks.json"))
    assert code == 5 and "VERIFICATION FAILED" in err
