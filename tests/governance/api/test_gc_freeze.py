"""``citygov serve`` moves what is alive once the app has started out of the cyclic collector's reach while it
serves (``create_app(freeze_startup_objects=True)``): a full collection then no longer walks the modules, the
compiled policy and the app each time. Garbage made while serving is still collected."""

from __future__ import annotations

import gc
import weakref

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from governance.api.app import create_app
from governance.config import Settings
from tests.governance.api.support import register, stand_in_backend
from tests.governance.protect.support import Clock

BODY = b'{"dataset":"lighting.streetlight","purpose":"energy","fields":["id"],"page_size":3}'


@pytest.fixture(autouse=True)
def _nothing_frozen() -> None:
    """These tests count what the app freezes. The ingest quality step freezes the heap once per process
    (``governance/ingest/quality.py``), so after any earlier test that ran a governed pipeline the count does
    not start at zero: give those objects back first (later tests only lose a little collector time)."""
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_the_served_app_freezes_its_startup_objects_while_it_runs(
        api_settings: Settings, engine: Engine, clock: Clock) -> None:
    assert gc.get_freeze_count() == 0
    app = create_app(api_settings, backend=stand_in_backend(), engine=engine, clock=clock,
                     freeze_startup_objects=True)
    state = app.state.api
    try:
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 0
            energy = register(state.registry, "energy", clock=clock)
            signed = energy.signer.headers("POST", "http://testserver/v1/data/query", BODY)
            assert client.post("/v1/data/query", content=BODY, headers=signed).status_code == 200
            node = _Node()
            gone = weakref.ref(node)
            del node
            gc.collect()
            assert gone() is None  # made while serving: still collected
        assert gc.get_freeze_count() == 0  # given back when the app stops
    finally:
        gc.unfreeze()


def test_an_app_built_for_tests_or_embedding_freezes_nothing(
        api_settings: Settings, engine: Engine, clock: Clock) -> None:
    app = create_app(api_settings, backend=stand_in_backend(), engine=engine, clock=clock)
    with TestClient(app):
        assert gc.get_freeze_count() == 0
