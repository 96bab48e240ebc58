"""The Merkle tree of RFC 6962 §2.1 (and RFC 9162 §2.1): hashes, proofs as ranges, proof verification.

Pure functions over hashes: nothing here reads the database. Proof *generation* is expressed as the list
of leaf ranges ``[start, end)`` whose tree hashes form the proof, so a store can fetch those hashes in one
go (see ``proofs.py``); verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from governance.audit.errors import ProofError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The tree hash of the empty log: SHA-256 of no bytes."""

Range = tuple[int, int]
"""Leaves ``[start, end)`` of one node of the tree."""
Piece = tuple[int, int]
"""A complete, aligned subtree: ``(level, index)`` covers leaves ``[index * 2**level, (index + 1) * 2**level)``."""

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return _sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): the size of the left subtree."""
    if n < 2:
        raise ValueError("a tree of fewer than two leaves has no split")
    return 1 << ((n - 1).bit_length() - 1)


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# --- tree hashes -------------------------------------------------------------------------------------------


def pieces(start: int, end: int) -> list[Piece]:
    """Split a node range of the tree into its complete aligned subtrees, largest (leftmost) first.

    Every node of an RFC 6962 tree, and every prefix ``[0, n)``, splits this way; its tree hash is the
    right fold of the pieces' hashes (:func:`fold`).
    """
    out: list[Piece] = []
    while start < end:
        size = 1 << ((end - start).bit_length() - 1)
        while start % size:
            size >>= 1
        level = size.bit_length() - 1
        out.append((level, start >> level))
        start += size
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """The tree hash of consecutive pieces, largest first: h1 ⊕ (h2 ⊕ (… ⊕ hk))."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a complete subtree whose 2**k bottom hashes are given, left to right."""
    level = list(hashes)
    if not level or not is_power_of_two(len(level)):
        raise ValueError(f"a complete subtree needs a power-of-two number of hashes, got {len(level)}")
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH over the given leaf hashes (streaming; memory O(log n))."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


class Frontier:
    """The right edge of a growing tree: the roots of its complete subtrees, largest first.

    Appending a leaf merges equal-sized subtrees (amortized one node hash a leaf); the root of the
    whole tree is their fold. This is what the log keeps in its head row instead of re-reading entries.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of {size} leaves holds {size.bit_count()} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) % HASH_SIZE:
            raise ValueError("frontier bytes are not a whole number of hashes")
        return cls(size, [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)])

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    def append(self, leaf: bytes, completed: Callable[[int, int, bytes], None] | None = None) -> None:
        """Add one leaf hash; ``completed(level, index, hash)`` hears of every subtree it completes."""
        position = self.size
        h = leaf
        n = position
        level = 0
        while n & 1:
            h = _sha256(NODE_PREFIX + self.hashes.pop() + h).digest()
            n >>= 1
            level += 1
            if completed is not None:
                completed(level, position >> level, h)
        self.hashes.append(h)
        self.size = position + 1

    def root(self) -> bytes:
        return fold(self.hashes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)


# --- proofs as ranges (RFC 6962 §2.1.1 PATH and §2.1.2 SUBPROOF) -------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The node ranges whose hashes make PATH(index, D[size]), leaf's sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    out: list[Range] = []
    start, n, m = 0, size, index
    while n > 1:
        k = split_point(n)
        if m < k:
            out.append((start + k, start + n))
            n = k
        else:
            out.append((start, start + k))
            start, n, m = start + k, n - k, m - k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[Range]:
    """The node ranges whose hashes make PROOF(old, D[new]); empty when ``old`` is 0 or ``new``."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    out: list[Range] = []
    start, n, m, whole = 0, new, old, True
    while m != n:
        k = split_point(n)
        if m <= k:
            out.append((start + k, start + n))
            n = k
        else:
            out.append((start, start + k))
            start, n, m, whole = start + k, n - k, m - k, False
    if not whole:
        out.append((start, start + n))
    out.reverse()
    return out


def range_hash(leaf_hashes: Sequence[bytes], rng: Range) -> bytes:
    """The tree hash of leaves ``[start, end)`` from an in-memory list (tests, bundles, small trees)."""
    start, end = rng
    return fold([perfect_root(leaf_hashes[i << lv : (i + 1) << lv]) for lv, i in pieces(start, end)])


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    size = len(leaf_hashes) if size is None else size
    return [range_hash(leaf_hashes, r) for r in inclusion_ranges(index, size)]


def consistency_proof(leaf_hashes: Sequence[bytes], old: int, new: int | None = None) -> list[bytes]:
    new = len(leaf_hashes) if new is None else new
    return [range_hash(leaf_hashes, r) for r in consistency_ranges(old, new)]


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to; raises ``ProofError`` if the proof has the wrong shape."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size}")
    _check_hashes([leaf, *proof])
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof has too many hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof has too few hashes")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``ProofError`` unless ``leaf`` is at ``index`` of the tree of ``size`` with ``root``."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of tree size {size}")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``ProofError`` unless the tree of ``old`` leaves is a prefix of the tree of ``new`` leaves."""
    if not 0 <= old <= new:
        raise ProofError(f"tree size went from {old} down to {new}")
    _check_hashes([old_root, new_root, *proof])
    if old == new:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old}: a fork")
        return
    if old == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = [old_root, *proof] if is_power_of_two(old) else list(proof)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof has too many hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof has too few hashes")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old}): the log was rewritten")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new})")


def _check_hashes(hashes: Iterable[bytes]) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ProofError(f"a hash of {len(h)} bytes where SHA-256 gives {HASH_SIZE}")
