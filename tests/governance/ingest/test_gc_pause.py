"""The cyclic collector is paused while a batch is processed and always resumed afterwards."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from adapters.base import Adapter
from adapters.care_hub import CareHubAdapter
from governance.config import Settings
from governance.ingest.batch import Batch
from governance.ingest.gc_pause import collection_paused
from governance.ingest.pipeline import Pipeline
from governance.ingest.steps import ParseStep
from tests.conftest import FIXED_NOW
from tests.governance.ingest.test_pipeline import capture, care_event


@pytest.fixture(autouse=True)
def _collector_enabled() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_and_resumed_after_even_on_error() -> None:
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():  # nested
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    with collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_pauses_in_two_threads_resume_when_the_last_closes() -> None:
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        with collection_paused():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    with collection_paused():
        thread.start()
        assert inside.wait(5)
    assert not gc.isenabled()  # the other thread's batch is still running
    release.set()
    thread.join(5)
    assert gc.isenabled()


class _Observe:
    """A pipeline step that notes whether the collector was running while the batch was processed."""

    name = "observe"

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def run(self, adapter: Adapter, batch: Batch) -> None:
        self.seen.append(gc.isenabled())


def test_pipeline_batches_run_with_the_collector_paused(engine: Engine, settings: Settings,
                                                        tmp_path: Path) -> None:
    observe = _Observe()
    pipeline = Pipeline(engine, settings, clock=lambda: FIXED_NOW,
                        steps=[ParseStep(settings.max_payload_bytes), observe])
    adapter = CareHubAdapter()
    path = capture(tmp_path / "care.jsonl", [care_event(n) for n in range(7)])
    messages = adapter.read(path, received_at=FIXED_NOW, max_bytes=settings.max_payload_bytes)
    report = pipeline.ingest(adapter, messages, batch_size=3)
    assert report.accepted == 7
    assert observe.seen == [False, False, False]  # three batches, none with the collector running
    assert gc.isenabled()
