"""Inclusion and consistency proofs from the store, without reading old entries.

A proof hash is the tree hash of a node range; that range splits into complete aligned subtrees
(``merkle.pieces``). A subtree at level L is rebuilt from the stored level S = L - L mod 4 below it —
leaf hashes in ``audit_entry`` when S is 0, ``audit_node`` rows otherwise — so at most 8 stored hashes
per piece. All the rows a proof needs come back in two queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, SmallInteger, and_, literal, or_, select, union_all

from governance.audit.errors import AuditRangeError, VerificationError
from governance.audit.log import NODE_LEVEL_STRIDE
from governance.audit.merkle import (
    EMPTY_ROOT,
    Piece,
    Range,
    consistency_ranges,
    fold,
    inclusion_ranges,
    perfect_root,
    pieces,
)
from governance.audit.tables import ENTRY, HEAD, HEAD_ID, NODE


@dataclass(frozen=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]

    def as_json(self) -> dict[str, Any]:
        return {"leaf_index": self.leaf_index, "tree_size": self.tree_size, "leaf_hash": self.leaf_hash.hex(),
                "hashes": [h.hex() for h in self.hashes]}


@dataclass(frozen=True)
class ConsistencyProof:
    first: int
    second: int
    hashes: list[bytes]

    def as_json(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, "hashes": [h.hex() for h in self.hashes]}


def tree_size(conn: Connection) -> int:
    size = conn.execute(select(HEAD.c.tree_size).where(HEAD.c.id == HEAD_ID)).scalar()
    return 0 if size is None else int(size)


def inclusion_proof(conn: Connection, seq: int, size: int | None = None) -> InclusionProof:
    """PATH(seq, D[size]) for the log as stored (``size`` defaults to the whole log)."""
    size = tree_size(conn) if size is None else size
    if not 0 <= seq < size:
        raise AuditRangeError(f"entry #{seq} is not in a log of {size} entries")
    ranges = inclusion_ranges(seq, size)
    hashes = _subtree_hashes(conn, [*(p for r in ranges for p in pieces(*r)), (0, seq)], size)
    return InclusionProof(seq, size, hashes[(0, seq)], [_range_hash(hashes, r) for r in ranges])


def consistency_proof(conn: Connection, first: int, second: int | None = None) -> ConsistencyProof:
    """PROOF(first, D[second]) for the log as stored."""
    second = tree_size(conn) if second is None else second
    if not 0 <= first <= second:
        raise AuditRangeError(f"no consistency proof from size {first} to size {second}")
    ranges = consistency_ranges(first, second)
    hashes = _subtree_hashes(conn, [p for r in ranges for p in pieces(*r)], second)
    return ConsistencyProof(first, second, [_range_hash(hashes, r) for r in ranges])


def prefix_hashes(conn: Connection, size: int) -> list[bytes]:
    """Roots of the complete subtrees that make up the first ``size`` leaves, largest first."""
    parts = pieces(0, size)
    hashes = _subtree_hashes(conn, parts, size)
    return [hashes[p] for p in parts]


def root_at(conn: Connection, size: int) -> bytes:
    """The tree hash of the first ``size`` entries, from stored hashes."""
    return fold(prefix_hashes(conn, size)) if size else EMPTY_ROOT


def _range_hash(hashes: dict[Piece, bytes], rng: Range) -> bytes:
    return fold([hashes[p] for p in pieces(*rng)])


def _subtree_hashes(conn: Connection, wanted: Iterable[Piece], size: int) -> dict[Piece, bytes]:
    """The root of each complete aligned subtree in ``wanted`` (all within the first ``size`` entries).

    One round trip: the head's tree size (to refuse sizes beyond the log), the leaf hashes and the
    stored subtree roots the pieces are built from.
    """
    plan: dict[Piece, tuple[int, int, int]] = {}
    for level, index in set(wanted):
        base = level - level % NODE_LEVEL_STRIDE
        span = 1 << (level - base)
        plan[(level, index)] = (base, index * span, span)
    leaves: set[int] = set()
    by_level: dict[int, set[int]] = {}
    for base, first, span in plan.values():
        (leaves if base == 0 else by_level.setdefault(base, set())).update(range(first, first + span))
    stored, stored_size = _fetch(conn, sorted(leaves), {lv: sorted(ix) for lv, ix in by_level.items()})
    if not 0 <= size <= stored_size:
        raise AuditRangeError(f"tree size {size} is beyond the log's {stored_size} entries")
    out: dict[Piece, bytes] = {}
    for piece, (base, first, span) in plan.items():
        try:
            hashes = [stored[(base, i)] for i in range(first, first + span)]
        except KeyError as exc:
            missing = exc.args[0][1]
            what = f"entry #{missing}" if base == 0 else f"the stored subtree root (level {base}, #{missing})"
            raise VerificationError(f"{what} is missing: the log was cut or edited",
                                    seq=missing if base == 0 else None) from None
        out[piece] = perfect_root(hashes)
    return out


_PG_FETCH = (
    "SELECT -1, tree_size, root_hash FROM audit_head WHERE id = %(head)s "
    "UNION ALL SELECT 0, seq, leaf_hash FROM audit_entry WHERE seq = ANY(%(seqs)s::bigint[]) "
    "UNION ALL SELECT n.level, n.idx, n.hash FROM audit_node n "
    "JOIN unnest(%(levels)s::smallint[], %(idxs)s::bigint[]) AS w(level, idx) ON n.level = w.level AND n.idx = w.idx"
)


def _fetch(conn: Connection, leaves: list[int], nodes: dict[int, list[int]]
           ) -> tuple[dict[tuple[int, int], bytes], int]:
    """Stored hashes by (level, index) — leaves at level 0 — and the log's tree size, in one query.

    PostgreSQL gets one fixed statement over arrays (prepared by the driver after a few uses); SQLite, which
    plans IN lists in microseconds, the same union through SQLAlchemy.
    """
    if conn.dialect.name == "postgresql":
        driver: Any = conn.connection.driver_connection
        levels = [lv for lv, idxs in nodes.items() for _ in idxs]
        idxs = [i for ix in nodes.values() for i in ix]
        with driver.cursor() as cursor:
            cursor.execute(_PG_FETCH, {"head": HEAD_ID, "seqs": leaves, "levels": levels, "idxs": idxs},
                           binary=True)
            rows = cursor.fetchall()
    else:
        parts: list[Select[Any]] = [select(literal(-1, SmallInteger), HEAD.c.tree_size, HEAD.c.root_hash)
                                    .where(HEAD.c.id == HEAD_ID)]
        if leaves:
            parts.append(select(literal(0, SmallInteger), ENTRY.c.seq, ENTRY.c.leaf_hash)
                         .where(ENTRY.c.seq.in_(leaves)))
        if nodes:
            parts.append(select(NODE.c.level, NODE.c.idx, NODE.c.hash).where(or_(*(
                and_(NODE.c.level == level, NODE.c.idx.in_(indexes)) for level, indexes in nodes.items()))))
        rows = list(conn.execute(union_all(*parts)))
    stored: dict[tuple[int, int], bytes] = {}
    stored_size = 0
    for level, idx, digest in rows:
        if level == -1:
            stored_size = int(idx)
        else:
            stored[(int(level), int(idx))] = bytes(digest)
    return stored, stored_size
