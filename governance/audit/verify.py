"""The one module that decides whether the audit log, a checkpoint or a bundle can be trusted.

Each check raises :class:`VerificationError` at the first problem, naming the entry (or tree head) and
what is wrong with it; success returns a small report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select

from governance.audit.bundle import BUNDLE_FORMAT
from governance.audit.canonical import is_canonical
from governance.audit.errors import ProofError, VerificationError
from governance.audit.keys import PublicKey
from governance.audit.log import NODE_LEVEL_STRIDE, latest_tree_head, read_head, tree_head_from_row
from governance.audit.merkle import EMPTY_ROOT, HASH_SIZE, Frontier, leaf_hash, pieces, verify_consistency
from governance.audit.proofs import consistency_proof, root_at
from governance.audit.tables import NODE, TREE_HEAD
from governance.audit.treehead import TreeHead

_LEAF = b"\x00"
_NODE = b"\x01"
_COLUMNS = ("time", "actor", "action", "decision")


@dataclass(frozen=True)
class LogReport:
    entries: int
    tree_heads: int
    root_hash: bytes
    key_id: str

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, "entries": self.entries, "tree_heads": self.tree_heads,
                "root_hash": self.root_hash.hex(), "key_id": self.key_id}


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection that sees one consistent state of the log, while other processes keep appending."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
            return
        conn.exec_driver_sql("BEGIN")  # SQLite: the first read fixes the snapshot until the end
        try:
            yield conn
        finally:
            conn.rollback()


def verify_log(engine: Engine, key: PublicKey, *, progress: Callable[[int], None] | None = None) -> LogReport:
    """Recompute the whole tree from the stored entries and check every signed tree head against it."""
    with snapshot(engine) as conn:
        heads = _checked_tree_heads(conn, key)
        nodes = {(int(lv), int(ix)): bytes(h) for lv, ix, h in conn.execute(select(NODE.c.level, NODE.c.idx,
                                                                                     NODE.c.hash))}
        head = read_head(conn)
        frontier = _verify_entries(conn, heads, nodes, progress)
    size = frontier.size
    root = frontier.root()
    for row_id, th in heads:
        if th.tree_size > size:
            raise VerificationError(
                f"tree head #{row_id} covers {th.tree_size} entries but only {size} are stored: "
                f"entries #{size}..#{th.tree_size - 1} were removed (the log was truncated)", seq=size)
    if head is None:
        if size:
            raise VerificationError("entries exist but the log's head row is missing")
    else:
        if head.key_id != key.key_id:
            raise VerificationError(f"the log's head names key {head.key_id[:16]}…, not {key.key_id[:16]}…")
        if head.tree_size > size:
            raise VerificationError(f"the head records {head.tree_size} entries but only {size} are stored: "
                                    f"entries #{size}.. were removed (the log was truncated)", seq=size)
        if head.tree_size < size:
            raise VerificationError(f"entries #{head.tree_size}..#{size - 1} were written behind the log's head "
                                    "(not through an append)", seq=head.tree_size)
        if head.frontier.hashes != frontier.hashes or head.root_hash != root:
            raise VerificationError("the head's stored frontier or root does not match the entries")
    signed = max((th.tree_size for _, th in heads), default=0)
    if signed < size:
        raise VerificationError(f"entries #{signed}..#{size - 1} are not covered by any signed tree head", seq=signed)
    for level, index in sorted(nodes):
        if (index + 1) << level > size:
            raise VerificationError(f"a stored subtree (level {level}, #{index}) lies beyond the log's end: "
                                    "entries were removed", seq=size)
    return LogReport(entries=size, tree_heads=len(heads), root_hash=root, key_id=key.key_id)


def _checked_tree_heads(conn: Connection, key: PublicKey) -> list[tuple[int, TreeHead]]:
    heads: list[tuple[int, TreeHead]] = []
    for row in conn.execute(select(TREE_HEAD).order_by(TREE_HEAD.c.id)):
        th = tree_head_from_row(row._mapping)
        problem = th.problem_with(key)
        if problem:
            raise VerificationError(f"tree head #{row.id} (size {th.tree_size}) {problem}")
        if heads and th.tree_size < heads[-1][1].tree_size:
            raise VerificationError(
                f"tree head #{row.id} has size {th.tree_size} after #{heads[-1][0]} had {heads[-1][1].tree_size}: "
                "the log was cut back and written again (a fork)")
        if heads and th.timestamp_ms < heads[-1][1].timestamp_ms:
            raise VerificationError(f"tree head #{row.id} is dated before #{heads[-1][0]}: tree heads were removed "
                                    "and the log written again, or inserted out of order")
        if th.tree_size == 0 and th.root_hash != EMPTY_ROOT:
            raise VerificationError(f"tree head #{row.id} of the empty log has a non-empty root")
        heads.append((int(row.id), th))
    return heads


def _verify_entries(conn: Connection, heads: list[tuple[int, TreeHead]], nodes: Mapping[tuple[int, int], bytes],
                    progress: Callable[[int], None] | None) -> Frontier:
    """Stream every entry once: check it, hash it into the tree, compare subtree roots and tree heads.

    This loop is the cost of ``audit verify`` (a few µs an entry), so it is written flat.
    """
    by_size: dict[int, list[tuple[int, TreeHead]]] = {}
    for row_id, th in heads:
        by_size.setdefault(th.tree_size, []).append((row_id, th))
    sha256, loads, dumps, sort_keys = hashlib.sha256, orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
    leaf_prefix, node_prefix, stride = _LEAF, _NODE, NODE_LEVEL_STRIDE
    stack: list[bytes] = []
    push, pop = stack.append, stack.pop
    n = 0
    last_good = 0
    for partition in _entry_rows(conn):
        for seq, raw, stored_leaf, *columns in partition:
            if seq != n:
                raise VerificationError(f"entry #{n} is missing (the next stored entry is #{seq})", seq=n)
            data = raw if type(raw) is bytes else bytes(raw)
            try:
                fields = loads(data)
                said = fields["seq"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise VerificationError(f"entry #{n} is not a JSON object with a seq: it was changed after it was "
                                        "written", seq=n) from None
            if said != n:
                raise VerificationError(f"the entry stored at #{n} says it is #{said}: entries were moved or "
                                        "reordered", seq=n)
            digest = sha256(leaf_prefix + data).digest()
            if digest != stored_leaf:
                raise VerificationError(f"entry #{n} does not match its leaf hash: its content was changed after "
                                        "it was written", seq=n)
            if dumps(fields, option=sort_keys) != data and not is_canonical(data):
                raise VerificationError(f"entry #{n} is not in canonical (RFC 8785) form", seq=n)
            if [fields.get("time"), fields.get("actor"), fields.get("action"), fields.get("decision")] != columns:
                _column_problem(n, fields, tuple(columns))
            h = digest
            m = n
            level = 0
            while m & 1:
                h = sha256(node_prefix + pop() + h).digest()
                m >>= 1
                level += 1
                if level % stride == 0 and nodes.get((level, n >> level)) != h:
                    first = (n >> level) << level
                    state = "missing" if (level, n >> level) not in nodes else "different"
                    raise VerificationError(
                        f"entries #{first}..#{n} do not hash to their stored subtree root ({state}): one of them "
                        "was changed together with its leaf hash", seq=first)
            push(h)
            n += 1
            if n in by_size:
                root = Frontier(n, stack).root()
                for row_id, th in by_size[n]:
                    if th.root_hash != root:
                        raise VerificationError(
                            f"tree head #{row_id} (size {n}) does not match the stored entries: an entry in "
                            f"#{last_good}..#{n - 1} was changed or replaced", seq=last_good)
                last_good = n
        if progress is not None:
            progress(n)
    return Frontier(n, stack)


_ENTRY_SCAN = "SELECT seq, entry, leaf_hash, time, actor, action, decision FROM audit_entry ORDER BY seq"
_FETCH = 20_000


def _entry_rows(conn: Connection) -> Iterator[Sequence[tuple[Any, ...]]]:
    """Every entry row in order, in lists of ``_FETCH``, straight from the driver (binary, server-side on
    PostgreSQL): going through SQLAlchemy rows costs half the verification time."""
    driver: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        cursor = driver.cursor(name="citygov_audit_verify", binary=True)
    else:
        cursor = driver.cursor()
    try:
        cursor.execute(_ENTRY_SCAN)
        while rows := cursor.fetchmany(_FETCH):
            yield rows
    finally:
        cursor.close()


def _column_problem(seq: int, fields: Mapping[str, Any], values: tuple[Any, ...]) -> None:
    for name, value in zip(_COLUMNS, values, strict=True):
        if fields.get(name) != value:
            raise VerificationError(f"entry #{seq}: the {name} column says {value!r} but the entry says "
                                    f"{fields.get(name)!r}: the column was edited", seq=seq)


# --- checkpoints ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsistencyReport:
    checkpoint: TreeHead
    current: TreeHead
    proof: list[bytes]

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, "checkpoint_size": self.checkpoint.tree_size, "current_size": self.current.tree_size,
                "current_root": self.current.root_hash.hex(), "proof": [h.hex() for h in self.proof]}


def verify_since(engine: Engine, key: PublicKey, checkpoint: TreeHead) -> ConsistencyReport:
    """Prove the log only grew since ``checkpoint``: no truncation, no rewriting, no fork."""
    checkpoint.check(key, "the checkpoint")
    with snapshot(engine) as conn:
        current = latest_tree_head(conn)
        if current is None:
            raise VerificationError(f"the log has no tree head at all; the checkpoint had {checkpoint.tree_size} "
                                    "entries: the log was emptied")
        current.check(key, "the latest tree head")
        if current.tree_size < checkpoint.tree_size:
            raise VerificationError(f"the log shrank from {checkpoint.tree_size} entries (checkpoint) to "
                                    f"{current.tree_size}: it was truncated", seq=current.tree_size)
        if current.timestamp_ms < checkpoint.timestamp_ms:
            raise VerificationError("the newest tree head is older than the checkpoint: later tree heads were "
                                    "removed (the log was rolled back)")
        proof = consistency_proof(conn, checkpoint.tree_size, current.tree_size).hashes
        prefix_root = root_at(conn, checkpoint.tree_size)
    try:
        verify_consistency(checkpoint.tree_size, current.tree_size, checkpoint.root_hash, current.root_hash, proof)
    except ProofError as exc:
        raise VerificationError(f"the log is not an extension of the checkpoint: {exc}") from exc
    if prefix_root != checkpoint.root_hash:
        raise VerificationError(f"the first {checkpoint.tree_size} stored entries no longer hash to the "
                                "checkpoint's root: they were rewritten")
    return ConsistencyReport(checkpoint, current, proof)


# --- bundles -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleReport:
    first_seq: int
    last_seq: int
    tree_head: TreeHead

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "tree_size": self.tree_head.tree_size, "root_hash": self.tree_head.root_hash.hex(),
                "timestamp": self.tree_head.timestamp_ms, "key_id": self.tree_head.key_id}


def verify_bundle(bundle: Any, *, trusted_key: PublicKey | None = None,
                  checkpoint: TreeHead | None = None) -> BundleReport:
    """Check an exported bundle with nothing but its contents (and optionally a pinned key or a checkpoint)."""
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise VerificationError(f"not a {BUNDLE_FORMAT} bundle")
    try:
        key = PublicKey.from_text(str(bundle["public_key"]))
        first = bundle["first_seq"]
        entries = bundle["entries"]
        prefix = [_hash(h) for h in bundle["prefix"]]
        consistency = [_hash(h) for h in bundle["consistency"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"malformed bundle: {exc!r}") from exc
    if trusted_key is not None and key.key_id != trusted_key.key_id:
        raise VerificationError(f"the bundle carries key {key.key_id[:16]}…, not the trusted key "
                                f"{trusted_key.key_id[:16]}…")
    head = TreeHead.from_json(bundle.get("tree_head"))
    head.check(key, "the bundle's tree head")
    if type(first) is not int or first < 0 or not isinstance(entries, list) or not entries:
        raise VerificationError("malformed bundle: first_seq and a non-empty list of entries are required")
    end = first + len(entries)
    if bundle.get("last_seq", end - 1) != end - 1:
        raise VerificationError(f"the bundle says its last entry is #{bundle.get('last_seq')} but it holds "
                                f"#{first}..#{end - 1}: entries were added or removed")
    if end > head.tree_size:
        raise VerificationError(f"the bundle holds entries up to #{end - 1} but its tree head covers {head.tree_size}")
    if len(prefix) != len(pieces(0, first)):
        raise VerificationError(f"the bundle's prefix has {len(prefix)} hashes; {first} entries need "
                                f"{len(pieces(0, first))}")
    if checkpoint is not None:
        _not_older(head, checkpoint, key)
    frontier = Frontier(first, prefix)
    if checkpoint is not None and 0 < checkpoint.tree_size == first and frontier.root() != checkpoint.root_hash:
        raise VerificationError("the entries before the bundle do not hash to your checkpoint's root: the log "
                                "was rewritten or forked")
    for offset, text in enumerate(entries):
        seq = first + offset
        if not isinstance(text, str):
            raise VerificationError(f"bundle entry #{seq} is not a string", seq=seq)
        data = text.encode("utf-8")
        try:
            fields = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise VerificationError(f"bundle entry #{seq} is not valid JSON", seq=seq) from None
        if type(fields) is not dict:
            raise VerificationError(f"bundle entry #{seq} is not a JSON object", seq=seq)
        if fields.get("seq") != seq:
            raise VerificationError(f"the bundle entry at #{seq} says it is #{fields.get('seq')}: entries were "
                                    "moved, removed or reordered", seq=seq)
        if not is_canonical(data):
            raise VerificationError(f"bundle entry #{seq} is not in canonical (RFC 8785) form", seq=seq)
        frontier.append(leaf_hash(data))
        if checkpoint is not None and frontier.size == checkpoint.tree_size and \
                frontier.root() != checkpoint.root_hash:
            raise VerificationError(f"the bundle's first {checkpoint.tree_size} entries do not hash to your "
                                    "checkpoint's root: the log was rewritten or forked")
    try:
        verify_consistency(end, head.tree_size, frontier.root(), head.root_hash, consistency)
    except ProofError as exc:
        raise VerificationError(f"the bundle's entries #{first}..#{end - 1} are not the ones its signed tree head "
                                f"covers (an entry was changed, removed or reordered): {exc}", seq=first) from exc
    return BundleReport(first, end - 1, head)


def _not_older(head: TreeHead, checkpoint: TreeHead, key: PublicKey) -> None:
    checkpoint.check(key, "the checkpoint")
    if head.tree_size < checkpoint.tree_size or head.timestamp_ms < checkpoint.timestamp_ms:
        raise VerificationError(
            f"the bundle's tree head (size {head.tree_size}, timestamp {head.timestamp_ms}) is older than your "
            f"checkpoint (size {checkpoint.tree_size}, timestamp {checkpoint.timestamp_ms}): an old bundle replayed")
    if head.tree_size == checkpoint.tree_size and head.root_hash != checkpoint.root_hash:
        raise VerificationError(f"the bundle and your checkpoint give two roots for size {head.tree_size}: a fork")


def _hash(text: Any) -> bytes:
    value = bytes.fromhex(text)
    if len(value) != HASH_SIZE:
        raise ValueError(f"a hash of {len(value)} bytes")
    return value
