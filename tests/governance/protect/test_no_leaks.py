"""No key material, and no real subject id, in reprs, exception messages or logs — across a whole flow."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.errors import CitygovError
from governance.protect.fieldcrypt import FieldProtector, ProtectionPlan
from governance.protect.keyring import Keyring
from governance.protect.keystore import SubjectKeystore
from governance.protect.masterkey import MasterKeys
from governance.protect.subject_keys import SubjectKeys
from governance.protect.tables import SubjectKey
from governance.store.db import create_db_engine, init_schema
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import KEY_V1, KEY_V2, b64, observation, observed


def _forms(secret: bytes) -> list[str]:
    """Every way a key could plausibly be printed."""
    return [
        b64(secret), base64.urlsafe_b64encode(secret).decode().rstrip("="), secret.hex(), secret.hex().upper(),
        repr(secret), str(list(secret))[:40], base64.b32encode(secret).decode().rstrip("=").lower(),
    ]


def test_nothing_secret_is_ever_printed(tmp_path: Path, caplog: pytest.LogCaptureFixture, plan: ProtectionPlan) -> None:
    key_text = f"v2:{b64(KEY_V2)},v1:{b64(KEY_V1)}"
    settings = Settings(data_dir=tmp_path / "data", master_key=SecretStr(key_text), dev_mode=False)
    engine = create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    init_schema(engine)
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):
        ring = Keyring.from_settings(settings, engine, clock=lambda: FIXED_NOW)
        protector = FieldProtector.from_settings(settings, engine, keyring=ring)
        stored = protector.protect([observation(0)], plan, observed_at=[observed(0)])
        registry = ConsentRegistry(engine, ring, clock=lambda: FIXED_NOW)
        result = registry.grant({"subject_id": "urn:ngsi-ld:Person:R-55812", "controller": "City Care",
                                 "purposes": ["care.alerting"], "collection_method": "form"}, actor="clerk")
        subject = protector.pseudonyms.of("urn:ngsi-ld:Person:R-55812")
        keystore = SubjectKeystore.from_settings(settings)
        secret = keystore.get(subject)
        assert secret is not None
        keys = SubjectKeys(engine, ring.master, keystore)
        with engine.connect() as conn:
            row = conn.execute(select(SubjectKey.__table__)).one()  # type: ignore[attr-defined]
        dek = ring.master.open(row.key_version, row.wrapped_key, f"citygov/subject-key|{subject}|kek-v2".encode(),
                               label="citygov/v1/subject-key-wrap", secret=secret)
        assert len(dek) == 32
        shown += [repr(x) for x in (settings, ring, ring.master, ring.pseudonym_key(), ring.receipt_key(), keystore,
                                    keys.status(subject), protector.subject_keys.data_keys([subject], create=False))]
        shown += [str(x) for x in (settings, ring, ring.master, ring.pseudonym_key(), ring.receipt_key())]
        shown.append(settings.model_dump_json())
        shown.append(result.model_dump_json())
        failures: list[CitygovError] = []
        for attempt in (
            lambda: protector.reveal([{**stored[0], "numValue": stored[0]["confidence"]}], fields={"numValue"},
                                     subject_property="refResident", observed_at=[observed(0)]),
            lambda: MasterKeys.parse(key_text.replace("v1:", "v9:x"), source="env"),
            lambda: Keyring(MasterKeys({1: bytes(32)}, source="wrong"), engine).pseudonym_key(),
            lambda: registry.grant({"subject_id": "urn:ngsi-ld:Person:R-55812", "controller": "x",
                                    "purposes": [], "collection_method": "form"}, actor="clerk"),
        ):
            with pytest.raises(CitygovError) as caught:
                attempt()
            failures.append(caught.value)
        shown += [str(f) for f in failures] + [repr(f) for f in failures]
        protector.shred(subject)
        assert not registry.has_consent("urn:ngsi-ld:Person:R-55812", "care.alerting", FIXED_NOW.replace(tzinfo=None))
    shown.append(caplog.text)
    shown += [str(r.__dict__) for r in caplog.records]
    everything = "\n".join(shown)
    for key in (KEY_V1, KEY_V2, secret, dek, ring.pseudonym_key()._key):
        for form in _forms(key):
            assert form not in everything, form
    assert "R-55812" not in caplog.text
    assert any("consent lookup failed" in r.getMessage() for r in caplog.records)  # the failure was logged
    engine.dispose()
