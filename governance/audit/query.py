"""Reading the log: entries by actor, action, decision, time, dataset or subject; subject access reports.

Time, actor, action and decision are columns copied out of each entry (checked by ``audit verify``).
Dataset and subject are matched in the entry bytes themselves — the canonical JSON of the value is a
substring of the entry — and then confirmed on the parsed entry, so nothing outside the hashed bytes
decides what an auditor sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, LargeBinary, Select, bindparam, func, select, text

from governance.audit.canonical import canonical_bytes, format_time
from governance.audit.entries import StoredEntry, touched_datasets
from governance.audit.tables import ENTRY

MAX_LIMIT = 100_000


@dataclass(frozen=True)
class EntryFilter:
    """What to look for. ``subject`` is a pseudonym (see ``LogKeys.pseudonymize``), never a raw id."""

    actor: str | None = None
    action: str | None = None
    decision: str | None = None
    dataset: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int | None = None
    limit: int = 1000

    def matches(self, entry: StoredEntry) -> bool:
        fields = entry.fields
        if self.dataset is not None and self.dataset not in touched_datasets(fields):
            return False
        return not (self.subject is not None and self.subject not in fields.get("subjects", ()))


def find_entries(conn: Connection, wanted: EntryFilter) -> list[StoredEntry]:
    """Entries matching ``wanted``, oldest first, at most ``wanted.limit``."""
    limit = max(1, min(wanted.limit, MAX_LIMIT))
    out: list[StoredEntry] = []
    after = wanted.after_seq
    while len(out) < limit:
        page = list(_page(conn, wanted, after, limit))
        if not page:
            break
        out.extend(e for e in page if wanted.matches(e))
        after = page[-1].seq
        if len(page) < limit:
            break
    return out[:limit]


def _page(conn: Connection, wanted: EntryFilter, after: int | None, limit: int) -> Iterator[StoredEntry]:
    query: Select[Any] = select(ENTRY.c.seq, ENTRY.c.entry, ENTRY.c.leaf_hash)
    if wanted.actor is not None:
        query = query.where(ENTRY.c.actor == wanted.actor)
    if wanted.action is not None:
        query = query.where(ENTRY.c.action == wanted.action)
    if wanted.decision is not None:
        query = query.where(ENTRY.c.decision == wanted.decision)
    if wanted.since is not None:
        query = query.where(ENTRY.c.time >= format_time(wanted.since))
    if wanted.until is not None:
        query = query.where(ENTRY.c.time < format_time(wanted.until))
    if after is not None:
        query = query.where(ENTRY.c.seq > after)
    for number, value in enumerate((wanted.dataset, wanted.subject)):
        if value is not None:
            query = query.where(_contains(conn, f"needle{number}", canonical_bytes(value)))
    for seq, data, leaf in conn.execute(query.order_by(ENTRY.c.seq).limit(limit)):
        yield StoredEntry(int(seq), bytes(data), bytes(leaf))


def _contains(conn: Connection, name: str, needle: bytes) -> ColumnElement[bool]:
    """The entry bytes contain ``needle`` (exact bytes: no LIKE wildcards, no case folding)."""
    param = bindparam(name, needle, type_=LargeBinary)
    if conn.dialect.name == "postgresql":
        return text(f"position(:{name} IN audit_entry.entry) > 0").bindparams(param)  # type: ignore[return-value]
    return func.instr(ENTRY.c.entry, param) > 0


def get_entry(conn: Connection, seq: int) -> StoredEntry | None:
    row = conn.execute(select(ENTRY.c.seq, ENTRY.c.entry, ENTRY.c.leaf_hash).where(ENTRY.c.seq == seq)).first()
    return None if row is None else StoredEntry(int(row[0]), bytes(row[1]), bytes(row[2]))


def subject_report(conn: Connection, pseudonym: str, *, limit: int = MAX_LIMIT) -> dict[str, Any]:
    """Every event that touched one data subject: when, by whom (department), for what purpose."""
    entries = find_entries(conn, EntryFilter(subject=pseudonym, limit=limit))
    events = [
        {
            "seq": e.seq,
            "time": e.fields["time"],
            "actor": e.fields["actor"],
            "action": e.fields["action"],
            "stage": e.fields.get("stage"),
            "dataset": e.fields.get("dataset"),
            "datasets": sorted(touched_datasets(e.fields)),
            "purpose": e.fields.get("purpose"),
            "decision": e.fields.get("decision"),
            "policy_revision": e.fields.get("policy_revision"),
            "leaf_hash": e.leaf_hash.hex(),
        }
        for e in entries
    ]
    return {
        "subject": pseudonym,
        "events": len(events),
        "first": events[0]["time"] if events else None,
        "last": events[-1]["time"] if events else None,
        "by_actor": dict(sorted(Counter(e["actor"] for e in events).items())),
        "by_purpose": dict(sorted(Counter(e["purpose"] or "(none)" for e in events).items())),
        "by_dataset": dict(sorted(Counter(d for e in events for d in e["datasets"]).items())),
        "entries": events,
    }
