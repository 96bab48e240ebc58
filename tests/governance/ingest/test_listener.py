"""The MQTT listener against the real broker (Mosquitto), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine
from sqlmodel import SQLModel

from adapters.care_hub import CareHubAdapter
from governance.config import Settings
from governance.ingest.listener import BrokerAddress, Listener
from governance.ingest.pipeline import Pipeline
from governance.store import entities, quarantine
from governance.store.db import create_db_engine, init_schema
from tests.governance.ingest.test_pipeline import care_event

pytestmark = pytest.mark.mqtt


def publish(url: str, topic: str, payloads: list[bytes]) -> None:
    address = BrokerAddress.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


class Running:
    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.thread = threading.Thread(target=listener.run, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        assert self.listener.subscribed.wait(10), "listener did not subscribe"
        return self.listener

    def __exit__(self, *exc: object) -> None:
        self.listener.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def topic_root() -> str:
    return f"citygov-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_listener(engine: Engine, settings: Settings, mqtt_url: str, topic_root: str) -> Callable[..., Listener]:
    def build(client_id: str | None = None, eng: Engine | None = None) -> Listener:
        return Listener(Pipeline(eng or engine, settings), CareHubAdapter(), url=mqtt_url, topic=f"{topic_root}/#",
                        client_id=client_id or f"t-{uuid.uuid4().hex[:8]}", flush_seconds=0.1)
    return build


def test_good_and_malformed_messages(make_listener: Callable[..., Listener], engine: Engine, mqtt_url: str,
                                     topic_root: str) -> None:
    payloads = [orjson.dumps(care_event(n)) for n in range(30)]
    payloads += [b"\xff\xfe\x00", b"{\"hub\": ", orjson.dumps(care_event(99, value="seventy")), b"", b"x" * 300_000]
    with Running(make_listener()) as listener:
        publish(mqtt_url, f"{topic_root}/H-1/events", payloads)
        wait_until(lambda: listener.report.read >= len(payloads))
    report = listener.report
    assert report.read == len(payloads) and report.balanced
    assert (report.accepted, report.quarantined) == (30, 5)
    assert report.by_reason == {"not_utf8": 1, "invalid_json": 2, "wrong_type": 1, "payload_too_large": 1}
    assert entities.count_entities(engine) == 30
    rows = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert {r["topic"] for r in rows} == {f"{topic_root}/H-1/events"}
    assert any(r["payload"] == b"\xff\xfe\x00" for r in rows)


def test_redelivered_messages_are_duplicates(make_listener: Callable[..., Listener], engine: Engine,
                                             mqtt_url: str, topic_root: str) -> None:
    payload = orjson.dumps(care_event(5))
    with Running(make_listener()) as listener:
        publish(mqtt_url, f"{topic_root}/H-5/events", [payload, payload, payload])
        wait_until(lambda: listener.report.read >= 3)
    assert (listener.report.accepted, listener.report.duplicates) == (1, 2)
    assert entities.count_entities(engine) == 1


def test_messages_sent_while_down_arrive_with_the_persistent_session(
        make_listener: Callable[..., Listener], engine: Engine, mqtt_url: str, topic_root: str) -> None:
    client_id = f"persist-{uuid.uuid4().hex[:8]}"
    with Running(make_listener(client_id)):
        pass  # the broker now knows the session and its subscription
    publish(mqtt_url, f"{topic_root}/H-7/events", [orjson.dumps(care_event(n)) for n in range(10)])
    with Running(make_listener(client_id)) as listener:
        wait_until(lambda: listener.report.read >= 10)
    assert listener.report.accepted == 10
    assert entities.count_entities(engine) == 10


def test_nothing_is_acknowledged_before_it_is_committed(
        make_listener: Callable[..., Listener], settings: Settings, mqtt_url: str, topic_root: str) -> None:
    # A store whose tables are gone: every commit fails until they are created again.
    engine = create_db_engine(settings.resolved_database_url())
    SQLModel.metadata.drop_all(engine)
    with Running(make_listener(eng=engine)) as listener:
        publish(mqtt_url, f"{topic_root}/H-9/events", [orjson.dumps(care_event(n)) for n in range(5)])
        time.sleep(1.0)
        assert listener.report.read == 0  # held, unacknowledged, retried
        init_schema(engine)
        wait_until(lambda: listener.report.read >= 5, timeout=40)
    assert listener.report.accepted == 5
    assert entities.count_entities(engine) == 5
    engine.dispose()


def _log_lines(stream: IO[bytes]) -> queue.Queue[bytes]:
    """Lines of a child's log, read by a thread: waiting for one never blocks past a deadline."""
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in iter(stream.readline, b""):
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[bytes], wanted: Callable[[bytes], bool], deadline: float) -> bool:
    while (left := deadline - time.monotonic()) > 0:
        try:
            if wanted(lines.get(timeout=left)):
                return True
        except queue.Empty:
            return False
    return False


def test_citygov_listen_stops_cleanly_on_sigterm(tmp_path: Path, mqtt_url: str, topic_root: str,
                                                  database_url: str) -> None:
    env = {**os.environ, "CITYGOV_DATA_DIR": str(tmp_path / "data"), "CITYGOV_DATABASE_URL": database_url,
           "CITYGOV_MQTT_URL": mqtt_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "governance.cli.main", "listen", "--adapter", "care-hub", "--topic",
         f"{topic_root}/#", "--client-id", f"cli-{uuid.uuid4().hex[:8]}", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        lines = _log_lines(process.stderr)
        deadline = time.monotonic() + 60
        # wait for the broker's SUBACK before publishing: earlier messages would not reach the session
        assert _wait_for_line(lines, lambda line: b"subscribed" in line, deadline), "listener never subscribed"
        # fall alerts: collected under vital interest, so the governed pipeline needs no consent for them
        falls = [orjson.dumps(care_event(n, event="fall_detected", value=None)) for n in range(4)]
        publish(mqtt_url, f"{topic_root}/H-3/events", [*falls, b"{"])
        committed = 0

        def all_committed(line: bytes) -> bool:  # the listener says it committed all five
            nonlocal committed
            entry = orjson.loads(line) if line.startswith(b"{") else {}
            if entry.get("message") == "batch committed":
                committed += int(entry.get("read", 0))
            return committed >= 5

        assert _wait_for_line(lines, all_committed, deadline), f"only {committed} of 5 committed"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # its log keeps draining through the thread; the report is on stdout
        assert process.stdout is not None
        out = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    report = orjson.loads(out)
    assert (report["read"], report["accepted"], report["quarantined"]) == (5, 4, 1)


def test_uncommitted_messages_are_redelivered_to_the_next_session(
        make_listener: Callable[..., Listener], settings: Settings, mqtt_url: str, topic_root: str) -> None:
    client_id = f"redeliver-{uuid.uuid4().hex[:8]}"
    engine = create_db_engine(settings.resolved_database_url())
    SQLModel.metadata.drop_all(engine)
    with Running(make_listener(client_id, eng=engine)) as first:
        publish(mqtt_url, f"{topic_root}/H-4/events", [orjson.dumps(care_event(n)) for n in range(6)])
        time.sleep(1.0)
    assert first.report.read == 0  # it stopped while the store was down: nothing committed, nothing acked
    init_schema(engine)
    with Running(make_listener(client_id, eng=engine)) as second:
        wait_until(lambda: second.report.read >= 6, timeout=30)
    assert second.report.accepted == 6
    assert entities.count_entities(engine) == 6
    engine.dispose()


def test_a_refused_subscription_stops_the_listener_with_the_reason(make_listener: Callable[..., Listener]) -> None:
    """A SUBACK that refuses the topic (e.g. the broker's ACL: 0x87 not authorized) means nothing would ever
    arrive: the listener stops and ``run`` raises a configuration error naming the topic, instead of
    listening to nothing. Mosquitto here allows every topic, so the refusal is the broker's reply delivered
    to the running listener's own callback."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from governance.errors import ConfigurationError

    listener = make_listener()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            listener.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert listener.subscribed.wait(10), "listener did not subscribe"
    listener._on_subscribe(listener._client, None, 1, [ReasonCode(PacketTypes.SUBACK, identifier=0x87)], None)
    thread.join(10)
    assert not thread.is_alive()
    assert len(failures) == 1 and isinstance(failures[0], ConfigurationError)
    assert listener.topic in str(failures[0]) and "refused" in str(failures[0])
