"""Subscribe to the city's MQTT broker and run arriving messages through the pipeline.

QoS 1 with manual acknowledgement: a message is acknowledged only after the batch holding it has
been committed (stored or quarantined), so a crash means redelivery, never loss. The session is
persistent (fixed client id, no clean start), so the broker keeps messages while the listener is down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from adapters.base import Adapter
from governance.errors import ConfigurationError, RetriableError
from governance.ingest.batch import IngestReport, Record
from governance.ingest.message import RawMessage
from governance.ingest.pipeline import Clock, Pipeline, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ConfigurationError(f"MQTT URL must start with mqtt:// or mqtts://, got {parsed.scheme!r}")
        tls = parsed.scheme == "mqtts"
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (8883 if tls else 1883),
            username=parsed.username,
            password=parsed.password,
            tls=tls,
        )


@dataclass(frozen=True, slots=True)
class _Delivery:
    mid: int
    qos: int
    topic: str
    payload: bytes


class Listener:
    """Batches messages from a topic filter through one adapter's pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        adapter: Adapter,
        *,
        url: str,
        topic: str,
        client_id: str | None = None,
        max_batch: int = 500,
        flush_seconds: float = 0.5,
        clock: Clock = utc_now,
    ) -> None:
        self.pipeline = pipeline
        self.adapter = adapter
        self.address = BrokerAddress.parse(url)
        self.topic = topic
        self.client_id = client_id or f"citygov-{adapter.name}"
        self.max_batch = max_batch
        self.flush_seconds = flush_seconds
        self.clock = clock
        self.report = IngestReport()
        self.stop_event = threading.Event()
        self.subscribed = threading.Event()
        self._refused: str | None = None
        self._inbox: queue.Queue[_Delivery] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
        )
        if self.address.username:
            self._client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self._client.tls_set()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: object,
                    _props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reasons: list[Any],
                      _props: object) -> None:
        """The broker's SUBACK: from now on messages on the topic reach this session (not before)."""
        if any(getattr(reason, "is_failure", False) for reason in reasons):
            # nothing would ever arrive: stop, and say why (run() raises), rather than listen to nothing
            self._refused = f"the broker refused the subscription to {self.topic!r}: {', '.join(map(str, reasons))}"
            log.error(self._refused)
            self.stop_event.set()
            return
        self.subscribed.set()
        log.info("subscribed to %s on %s:%s", self.topic, self.address.host, self.address.port)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(_Delivery(msg.mid, msg.qos, msg.topic, bytes(msg.payload)))

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> IngestReport:
        """Run until :meth:`stop` (or a signal handler calling it); return the totals."""
        try:
            self._client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as exc:
            raise RetriableError(
                f"cannot reach the MQTT broker at {self.address.host}:{self.address.port}: {exc}"
            ) from exc
        self._client.loop_start()
        try:
            while not self.stop_event.is_set():
                self._process(self._collect())
            self._process(self._drain())  # what already arrived is committed before leaving
        finally:
            self._client.disconnect()
            self._client.loop_stop()
        if self._refused is not None:
            raise ConfigurationError(self._refused)
        return self.report

    def _collect(self) -> list[_Delivery]:
        deliveries: list[_Delivery] = []
        deadline = time.monotonic() + self.flush_seconds
        while len(deliveries) < self.max_batch and not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                deliveries.append(self._inbox.get(timeout=min(remaining, 0.1)))
            except queue.Empty:
                continue
        return deliveries

    def _drain(self) -> list[_Delivery]:
        deliveries: list[_Delivery] = []
        while True:
            try:
                deliveries.append(self._inbox.get_nowait())
            except queue.Empty:
                return deliveries

    def _process(self, deliveries: list[_Delivery]) -> None:
        if not deliveries:
            return
        received_at = self.clock()
        records = [
            Record(message, message.fingerprint(self.adapter.name))
            for message in (
                RawMessage(payload=d.payload, source=f"mqtt:{d.topic}"[:512], received_at=received_at,
                           topic=d.topic)
                for d in deliveries
            )
        ]
        delay = 0.5
        while True:
            try:
                report = self.pipeline.run_batch(self.adapter, records)
                break
            except Exception:
                # storage unavailable or another fault: keep the batch unacknowledged and try again
                log.exception("batch of %d messages not committed; retrying in %.1fs", len(records), delay)
                if self.stop_event.wait(delay):
                    return  # unacknowledged: the broker redelivers them to the next session
                delay = min(delay * 2, 30.0)
                for record in records:
                    record.duplicate, record.rejection, record.entities = False, None, []
        for delivery in deliveries:
            if delivery.qos > 0:
                self._client.ack(delivery.mid, delivery.qos)
        self.report.add(report)
        log.info(
            "batch committed",
            extra={"read": report.read, "accepted": report.accepted,
                   "quarantined": report.quarantined, "duplicates": report.duplicates},
        )
