"""``citygov serve`` runs the retention sweep on a schedule, in a thread stopped with the server."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from governance.api.app import create_app
from governance.config import Settings
from governance.store.entities import add_entities, count_entities
from tests.conftest import FIXED_NOW


def _row(n: int, retain_until: object) -> dict[str, object]:
    entity = {"id": f"urn:ngsi-ld:NoiseLevelObserved:n-{n}", "type": "NoiseLevelObserved", "LAeq": 50.0 + n}
    return {"entity_id": entity["id"], "entity_type": "NoiseLevelObserved", "dataset": "monitoring.noise",
            "observed_at": FIXED_NOW, "data": entity, "adapter": "test", "adapter_version": "1", "source": "test",
            "received_at": FIXED_NOW, "stored_at": FIXED_NOW, "raw_sha256": "0" * 64,
            "message_fingerprint": f"{n:064d}", "removed_fields": [], "subject": None,
            "retain_until": retain_until, "policy_revision": None}


def test_the_server_sweeps_what_has_expired_and_stops_the_sweeper_with_it(engine: Engine, settings: Settings) -> None:
    with engine.begin() as conn:
        add_entities(conn, [_row(1, FIXED_NOW - timedelta(days=1)), _row(2, FIXED_NOW + timedelta(days=1))])
    app = create_app(settings, engine=engine, clock=lambda: FIXED_NOW, retention=True)
    with TestClient(app):
        deadline = time.monotonic() + 20
        while count_entities(engine) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count_entities(engine) == 1  # the expired row went, the other stays
    sweepers = [t for t in threading.enumerate() if t.name == "retention-sweep"]
    assert not sweepers, "the sweeper stops with the server"
