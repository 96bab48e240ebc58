"""docs/signed-requests.md stays true: its worked example is recomputed here, byte for byte, and accepted by
the API configured with the example's public URL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from governance.api.jose import b64url, b64url_decode, from_key
from governance.config import Settings
from tests.conftest import FIXED_NOW
from tests.governance.api.support import ApiHarness, audit_entries, harness
from tests.governance.protect.support import Clock

DOC = Path(__file__).resolve().parents[3] / "docs" / "signed-requests.md"
D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"  # RFC 8037 A.1
BODY = (b'{"dataset":"lighting.traffic-flow","purpose":"transport","fields":["id","intensity","dateObserved"],'
        b'"page_size":100}')
JTI = "3b241101-e2bb-4255-8caf-4136c566a962"


def example_token() -> tuple[str, str, str]:
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(D))
    kid = from_key(key.public_key()).kid
    bsh = b64url(hashlib.sha256(BODY).digest())
    iat = int(FIXED_NOW.timestamp())
    header = orjson.dumps({"alg": "EdDSA", "kid": kid, "typ": "JWT"})
    claims = orjson.dumps({"iss": "transport", "aud": "citygov", "iat": iat, "exp": iat + 60, "jti": JTI,
                           "htm": "POST", "htu": "https://data.city.example/v1/data/query", "bsh": bsh})
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    return kid, bsh, f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


@pytest.fixture
def public_api(api_settings: Settings, engine: Engine, clock: Clock) -> Iterator[ApiHarness]:
    settings = api_settings.model_copy(update={"api_public_url": "https://data.city.example"})
    yield from harness(settings, engine, clock)


def test_the_worked_example_in_the_docs_is_exact(public_api: ApiHarness, clock: Clock) -> None:
    kid, bsh, token = example_token()
    text = DOC.read_text(encoding="utf-8")
    assert FIXED_NOW.timestamp() == 1795176000
    for value in (kid, bsh, token, BODY.decode(), f"{len(BODY)} bytes", D):
        assert value in text, value
    assert b64url(hashlib.sha256(b"").digest()) in text

    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(D))
    public_api.registry.add("transport", from_key(key.public_key()), actor="test:officer")
    clock.advance(seconds=5)
    # the app sees http://testserver, but checks htu against CITYGOV_API_PUBLIC_URL
    response = public_api.client.post("/v1/data/query", content=BODY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403  # authenticated; the stand-in query layer lets only 'energy' read
    assert audit_entries(public_api.audit)[-1]["actor"] == "department:transport"
    response = public_api.client.post("/v1/data/query", content=BODY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401  # and its jti is spent
