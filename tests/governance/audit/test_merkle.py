"""The RFC 6962 tree in memory: every proof of every small tree verifies, and every corruption fails."""

from __future__ import annotations

import hashlib

import pytest

from governance.audit.errors import ProofError
from governance.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_root,
    pieces,
    range_hash,
    root_from_inclusion,
    root_of,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(70)]
OTHER = hashlib.sha256(b"something else").digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 MTH straight from its recursive definition (a second implementation to compare with)."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def test_hash_prefixes_separate_leaves_from_nodes() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert root_of([]) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 64, 65, 70])
def test_streaming_root_matches_the_recursive_definition(size: int) -> None:
    assert root_of(LEAVES[:size]) == mth(LEAVES[:size])


def test_every_inclusion_proof_of_every_size_verifies_and_corruptions_fail() -> None:
    for size in range(1, 40):
        root = mth(LEAVES[:size])
        for index in range(size):
            proof = inclusion_proof(LEAVES, index, size)
            verify_inclusion(index, size, LEAVES[index], proof, root)
            probes = [
                (index ^ 1, size, LEAVES[index], proof, root),
                (index, size * 2, LEAVES[index], proof, root),  # the verifier binds the size's shape only:
                (index, size // 2, LEAVES[index], proof, root),  # size+1 may pass; the signed head binds it
                (index, size, OTHER, proof, root),
                (index, size, LEAVES[index], proof, OTHER),
                (index, size, LEAVES[index], [*proof, OTHER], root),
                (index, size, LEAVES[index], [OTHER, *proof], root),
            ]
            if proof:
                probes.append((index, size, LEAVES[index], proof[:-1], root))
                flipped = bytearray(proof[0])
                flipped[0] ^= 8
                probes.append((index, size, LEAVES[index], [bytes(flipped), *proof[1:]], root))
            for probe in probes:
                with pytest.raises(ProofError):
                    verify_inclusion(*probe)


def test_every_consistency_proof_of_every_pair_verifies_and_corruptions_fail() -> None:
    roots = [mth(LEAVES[:n]) for n in range(41)]
    for new in range(1, 41):
        for old in range(0, new + 1):
            proof = consistency_proof(LEAVES, old, new)
            verify_consistency(old, new, roots[old], roots[new], proof)
            if old in (0, new):
                continue
            bad = [
                (old, new, OTHER, roots[new], proof),
                (old, new, roots[old], OTHER, proof),
                (old, new, roots[new], roots[old], proof),
                (old, new, roots[old], roots[new], []),
                (old, new, roots[old], roots[new], proof[:-1]),
                (old, new, roots[old], roots[new], [*proof, roots[old]]),
                (old, new * 2, roots[old], roots[new], proof),
            ]
            if old > 1:
                bad.append((old - 1, new, roots[old], roots[new], proof))
            for probe in bad:
                with pytest.raises(ProofError):
                    verify_consistency(*probe)


def test_a_shrinking_or_forked_log_is_never_consistent() -> None:
    with pytest.raises(ProofError, match="down"):
        verify_consistency(5, 4, mth(LEAVES[:5]), mth(LEAVES[:4]), [])
    with pytest.raises(ProofError, match="fork"):
        verify_consistency(4, 4, mth(LEAVES[:4]), mth(LEAVES[1:5]), [])
    forked = [*LEAVES[:3], OTHER, *LEAVES[4:10]]
    with pytest.raises(ProofError):
        verify_consistency(5, 10, mth(LEAVES[:5]), mth(forked), consistency_proof(forked, 5, 10))


def test_wrong_hash_lengths_are_refused() -> None:
    with pytest.raises(ProofError, match="bytes"):
        root_from_inclusion(0, 2, b"short", [LEAVES[1]])


def test_frontier_reports_completed_subtrees_and_round_trips() -> None:
    frontier = Frontier()
    completed: list[tuple[int, int, bytes]] = []
    for h in LEAVES[:37]:
        frontier.append(h, lambda level, index, digest: completed.append((level, index, digest)))
        assert frontier.root() == mth(LEAVES[: frontier.size])
    assert len(completed) == 37 - bin(37).count("1")  # every merge makes one complete subtree
    for level, index, digest in completed:
        assert digest == perfect_root(LEAVES[index << level : (index + 1) << level])
    again = Frontier.from_bytes(37, frontier.to_bytes())
    assert again.hashes == frontier.hashes
    with pytest.raises(ValueError, match="holds"):
        Frontier(5, [EMPTY_ROOT])


def test_pieces_cover_node_ranges_with_aligned_complete_subtrees() -> None:
    assert pieces(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert pieces(8, 11) == [(1, 4), (0, 10)]
    for size in range(1, 70):
        for start, end in consistency_ranges(size // 2, size) if size > 1 else []:
            assert range_hash(LEAVES, (start, end)) == mth(LEAVES[start:end])
