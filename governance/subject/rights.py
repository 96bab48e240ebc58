"""The data subject's rights of access (GDPR Art. 15) and erasure (Art. 17), over everything citygov holds.

A subject is named by their real id (``urn:ngsi-ld:Person:R-55812``, or a bare ``R-55812``) or by their
stored pseudonym (``psn:v1:…``); both resolve to the pseudonym with ``Pseudonyms(keyring).subject_ref``.

**Export** gathers, for one subject: their stored entities with every sealed field decrypted; their
consents with the full history and every signed receipt; the quarantine rows whose payload names them
(metadata only); the key's status; and their access history from the audit log. The export itself is
audited (``subject.export``, with counts).

**Erase** crypto-shreds the subject's data key first — the irreversible step, after which no copy of the
database, however old, opens their values — then deletes their entity rows (in batches), withdraws their
active consents (each withdrawal audited and receipted as usual), deletes the quarantine rows whose payload
names them, and writes one ``erasure`` audit entry with the counts, in the transaction of the last delete.
Their id never appears anywhere in that; the pseudonym is the entry's subject, so ``citygov audit subject``
shows that the erasure happened. Running it again finds nothing more and records the request again.

What stays, on purpose: consent records and their events (evidence of lawful processing, pseudonymized),
the audit log (append-only; pseudonyms, counts and hashes), the key tombstone (so nothing new is written
for the subject), and the ``ingest_message`` ledger (fingerprints, so a re-sent message is recognized).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, select

from governance.audit.entries import Action, AuditEvent
from governance.audit.log import AuditLog
from governance.audit.observer import ConsentAuditor
from governance.audit.query import MAX_LIMIT, subject_report
from governance.catalog import SchemaCatalog, default_catalog
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.consent.tables import ConsentEvent
from governance.errors import InvalidRequestError
from governance.ingest.message import entity_urn
from governance.protect.errors import DecryptionError, ProtectionError
from governance.protect.fieldcrypt import FieldProtector, is_sealed, observation_time_fields
from governance.protect.keyring import Clock, Keyring, utc_now
from governance.protect.pseudonym import Pseudonyms, is_pseudonym
from governance.protect.quarantine import QuarantineVault
from governance.retention.wipe import secure_delete, truncate_wal
from governance.store.entities import as_utc
from governance.store.tables import EntityRecord, QuarantineRecord

ENTITY = EntityRecord.__table__  # type: ignore[attr-defined]
QUARANTINE = QuarantineRecord.__table__  # type: ignore[attr-defined]
EVENT = ConsentEvent.__table__  # type: ignore[attr-defined]
EXPORT_ACTION = "subject.export"
DEFAULT_ACTOR = "system:subject-rights"
"""Who handled a request when the caller does not say (the CLI and the API always do)."""
PAGE = 1000
QUARANTINE_PAGE = 100
"""Quarantine rows read at a time while looking for a subject (payloads are up to CITYGOV_MAX_PAYLOAD_BYTES)."""
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.){1,512})"')
_BARE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9:._@/-]{0,255}")


def subject_urn(raw: str) -> str:
    """A bare id is a person (``R-1`` → ``urn:ngsi-ld:Person:R-1``); a URN or a pseudonym is taken as it is."""
    raw = raw.strip()
    if not raw or len(raw) > 2048:
        raise InvalidRequestError("a subject is an id of 1 to 2048 characters, or its pseudonym")
    return raw if raw.startswith(("urn:", "psn:")) else entity_urn("Person", raw)


@dataclass
class ErasureReport:
    """What an erasure did. Names the subject by pseudonym only."""

    subject: str
    erased_at: datetime
    key_destroyed: bool
    """The subject had a live data key, destroyed now (False: there was none, or it was destroyed before)."""
    secret_destroyed: bool
    entities: Counter[str] = field(default_factory=Counter)
    """Dataset → entity rows deleted."""
    quarantine: Counter[str] = field(default_factory=Counter)
    """Adapter → quarantine rows deleted."""
    consents_withdrawn: int = 0
    audit_seq: int | None = None

    @property
    def total(self) -> int:
        """Rows deleted (entities and quarantine)."""
        return sum(self.entities.values()) + sum(self.quarantine.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject, "erased_at": self.erased_at.isoformat(), "key_destroyed": self.key_destroyed,
            "secret_destroyed": self.secret_destroyed, "entities": dict(sorted(self.entities.items())),
            "quarantine": dict(sorted(self.quarantine.items())), "consents_withdrawn": self.consents_withdrawn,
            "audit_seq": self.audit_seq,
        }


class SubjectRights:
    """Export and erasure for one store, with the process's keys."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        keyring: Keyring | None = None,
        clock: Clock = utc_now,
        catalog: SchemaCatalog | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.catalog = catalog or default_catalog()
        self.keyring = keyring or Keyring.from_settings(settings, engine, clock=clock)
        self.pseudonyms = Pseudonyms(self.keyring)
        self.protector = FieldProtector.from_settings(settings, engine, keyring=self.keyring, clock=clock)
        self.audit = AuditLog.open(engine, settings.data_dir, keyring=self.keyring, clock=clock)
        self.consents = ConsentRegistry(engine, self.keyring, clock=clock, issuer=settings.receipt_issuer,
                                        on_change=ConsentAuditor(self.audit))
        self.vault = QuarantineVault(self.keyring, self.catalog, retention_days=settings.quarantine_retention_days,
                                     protector=self.protector)
        self._subject_property = {
            t: prop for t in self.catalog.types() if (prop := self.catalog.get(t).subject_property) is not None
        }

    def pseudonym(self, subject_id: str) -> str:
        return self.pseudonyms.subject_ref(subject_urn(subject_id))

    # -- access ------------------------------------------------------------------------------------

    def export(self, subject_id: str, *, actor: str) -> dict[str, Any]:
        """Everything held about the subject, decrypted — for the subject's eyes only. Audited."""
        subject = self.pseudonym(subject_id)
        now = self.clock()
        entities = list(self._entities(subject))
        consents = self._consents(subject)
        quarantined = [_quarantine_meta(row) for row in self._quarantined(subject)]
        with self.engine.connect() as conn:
            history = subject_report(conn, subject, limit=MAX_LIMIT)
        key = self.protector.subject_keys.status(subject)
        counts = {
            "entities": len(entities),
            "unreadable": sum(1 for e in entities if not e["readable"]),
            "datasets": dict(sorted(Counter(e["dataset"] for e in entities).items())),
            "consents": len(consents),
            "quarantine": len(quarantined),
            "audit_entries": history["events"],
        }
        self.audit.append([AuditEvent(
            actor=actor, action=EXPORT_ACTION, stage="use", decision="exported", subjects=[subject],
            refs={**counts, "datasets": sorted(counts["datasets"])},
        )])
        return {
            "subject": {"id": subject_id if not is_pseudonym(subject_id) else None, "pseudonym": subject,
                        "key": _key_status(key)},
            "generated_at": now.isoformat(),
            "counts": counts,
            "entities": entities,
            "consents": consents,
            "quarantine": quarantined,
            "access_history": history,
        }

    def _entities(self, subject: str) -> Iterator[dict[str, Any]]:
        last = 0
        while True:
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(
                    select(ENTITY).where(ENTITY.c.subject == subject, ENTITY.c.pk > last)
                    .order_by(ENTITY.c.pk).limit(PAGE))]
            if not rows:
                return
            last = rows[-1]["pk"]
            yield from self._reveal(rows)

    def _reveal(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_type: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_type.setdefault(row["entity_type"], []).append(row)
        opened: dict[int, tuple[dict[str, Any], bool]] = {}
        for entity_type, group in by_type.items():
            prop = self._subject_property.get(entity_type)
            datas = [row["data"] for row in group]
            sealed = {name for data in datas for name, value in data.items() if is_sealed(value)}
            try:
                if prop is None or not sealed:
                    raise DecryptionError
                # the observation time: sealed in rows written before it was left in the clear, plain since
                clear_ok = observation_time_fields([self.catalog.get(entity_type)])
                revealed = self.protector.reveal(datas, fields=sealed, subject_property=prop,
                                                 observed_at=[as_utc(row["observed_at"]) for row in group],
                                                 clear_ok=clear_ok)
                for row, data in zip(group, revealed, strict=True):
                    opened[row["pk"]] = (data, True)
            except DecryptionError:
                for row in group:  # erased meanwhile, or damaged: say so, never hand out ciphertext
                    data = {k: v for k, v in row["data"].items() if not is_sealed(v)}
                    opened[row["pk"]] = (data, not any(is_sealed(v) for v in row["data"].values()))
        out = []
        for row in rows:
            data, readable = opened[row["pk"]]
            out.append({
                "dataset": row["dataset"], "entity_type": row["entity_type"], "entity_id": row["entity_id"],
                "observed_at": _iso(row["observed_at"]), "received_at": _iso(row["received_at"]),
                "stored_at": _iso(row["stored_at"]), "retain_until": _iso(row["retain_until"]),
                "adapter": row["adapter"], "source": row["source"], "policy_revision": row["policy_revision"],
                "readable": readable, "data": data,
            })
        return out

    def _consents(self, subject: str) -> list[dict[str, Any]]:
        views = self.consents.find(subject_id=subject, limit=MAX_LIMIT)
        out = []
        for view in views:
            full = self.consents.get(view.consent_id)
            with self.engine.connect() as conn:
                receipts = {row.receipt_id: row.receipt for row in conn.execute(
                    select(EVENT.c.receipt_id, EVENT.c.receipt).where(EVENT.c.consent_id == view.consent_id))}
            record = full.model_dump(mode="json")
            record["status_now"] = full.status_at(self.clock())
            record["receipts"] = [{"seq": e.seq, "event": e.event, "receipt_id": e.receipt_id,
                                   "receipt": receipts.get(e.receipt_id)} for e in full.history]
            out.append(record)
        return out

    def _quarantined(self, subject: str) -> Iterator[dict[str, Any]]:
        """Quarantine rows whose payload names the subject (sealed payloads are opened to look)."""
        last = 0
        cache: dict[bytes, bool] = {}
        while True:
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(
                    select(QUARANTINE).where(QUARANTINE.c.pk > last).order_by(QUARANTINE.c.pk)
                    .limit(QUARANTINE_PAGE))]
            if not rows:
                return
            last = rows[-1]["pk"]
            for row in rows:
                if row.get("subject") is not None:  # sealed under a subject's key: the column says whose
                    if row["subject"] == subject:
                        yield row
                    continue
                payload = bytes(row["payload"])
                if row.get("sealed"):
                    try:
                        opened = self.vault.open_row(row)
                    except DecryptionError:
                        continue
                    payload = opened["payload"] + b" " + str(opened.get("topic") or "").encode("utf-8")
                if self._names(payload, subject, cache):
                    yield row

    def _names(self, payload: bytes, subject: str, cache: dict[bytes, bool]) -> bool:
        """Whether any identifier in ``payload`` (a quoted string, or a bare token) is the subject."""
        tokens = {m.group(1) for m in _QUOTED.finditer(payload)} | set(_BARE.findall(payload))
        for token in tokens:
            found = cache.get(token)
            if found is None:
                found = cache[token] = self._is_subject(token, subject)
            if found:
                return True
        return False

    def _is_subject(self, token: bytes, subject: str) -> bool:
        try:
            text = token.decode("utf-8")
            return subject in {self.pseudonyms.subject_ref(text), self.pseudonyms.of(subject_urn(text))}
        except (UnicodeDecodeError, ProtectionError, InvalidRequestError):
            return False

    # -- erasure -----------------------------------------------------------------------------------

    def erase(self, subject_id: str, *, actor: str, batch_size: int | None = None) -> ErasureReport:
        """Crypto-shred, then delete everything of the subject; one ``erasure`` audit entry. Idempotent."""
        subject = self.pseudonym(subject_id)
        size = batch_size or self.settings.retention_batch_size
        quarantined = [(row["pk"], row["adapter"]) for row in self._quarantined(subject)]
        shredded = self.protector.shred(subject, at=self.clock())
        report = ErasureReport(subject=subject, erased_at=shredded.destroyed_at, key_destroyed=shredded.had_key,
                               secret_destroyed=shredded.had_secret)
        while True:
            with self.engine.begin() as conn:
                secure_delete(conn)
                datasets = conn.execute(
                    delete(ENTITY).where(ENTITY.c.pk.in_(
                        select(ENTITY.c.pk).where(ENTITY.c.subject == subject).limit(size).scalar_subquery()))
                    .returning(ENTITY.c.dataset)
                ).scalars().all()
            report.entities.update(datasets)
            if len(datasets) < size:
                break
        for consent in self.consents.find(subject_id=subject, status="active", limit=MAX_LIMIT):
            self.consents.withdraw(consent.consent_id, actor=actor, reason="erasure requested by the data subject")
            report.consents_withdrawn += 1
        with self.engine.begin() as conn:
            secure_delete(conn)
            for start in range(0, len(quarantined), size):
                chunk = dict(quarantined[start : start + size])
                gone = conn.execute(delete(QUARANTINE).where(QUARANTINE.c.pk.in_(list(chunk)))
                                    .returning(QUARANTINE.c.pk)).scalars().all()
                report.quarantine.update(chunk[pk] for pk in gone)
            appended = self.audit.append([_erasure_event(report, actor)], conn=conn)
            report.audit_seq = appended.first_seq
        truncate_wal(self.engine)
        return report


def export(
    engine: Engine, settings: Settings, subject_id: str, *, actor: str = DEFAULT_ACTOR, clock: Clock = utc_now
) -> dict[str, Any]:
    """Everything held about one subject (real id or pseudonym), decrypted; audited."""
    return SubjectRights(engine, settings, clock=clock).export(subject_id, actor=actor)


def erase(engine: Engine, settings: Settings, subject_id: str, *, actor: str = DEFAULT_ACTOR,
          clock: Clock = utc_now, batch_size: int | None = None) -> ErasureReport:
    """Crypto-shred and delete everything of one subject (real id or pseudonym); audited; idempotent."""
    return SubjectRights(engine, settings, clock=clock).erase(subject_id, actor=actor, batch_size=batch_size)


def _erasure_event(report: ErasureReport, actor: str) -> AuditEvent:
    datasets = sorted(report.entities)
    return AuditEvent(
        actor=actor,
        action=Action.ERASURE,
        stage="storage",
        dataset=datasets[0] if len(datasets) == 1 else None,
        decision="erased",
        subjects=[report.subject],
        refs={
            "entities": dict(sorted(report.entities.items())),
            "quarantine": dict(sorted(report.quarantine.items())),
            "consents_withdrawn": report.consents_withdrawn,
            "key_destroyed": report.key_destroyed,
            "secret_destroyed": report.secret_destroyed,
            "datasets": datasets,
        },
        time=report.erased_at,
    )


def _quarantine_meta(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["pk"], "adapter": row["adapter"], "received_at": _iso(row["received_at"]),
        "quarantined_at": _iso(row["quarantined_at"]), "step": row["step"], "reason": row["reason"],
        "status": row["status"], "attempts": row["attempts"], "payload_size": row["payload_size"],
        "sealed": bool(row.get("sealed")), "retain_until": _iso(row.get("retain_until")),
    }


def _key_status(status: dict[str, Any] | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {"version": status["key_version"], "created_at": _iso(status["created_at"]),
            "rewrapped_at": _iso(status["rewrapped_at"]), "destroyed_at": _iso(status["destroyed_at"])}


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.astimezone(UTC).isoformat() if value is not None else None
