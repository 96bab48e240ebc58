"""The shipped test vectors, checked two ways: with citygov's code, and with a minimal verifier written
from docs/audit-format.md alone (below, sharing no code with governance.audit)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.audit import merkle
from governance.audit.canonical import canonical_bytes
from governance.audit.errors import VerificationError
from governance.audit.keys import PublicKey
from governance.audit.verify import verify_bundle
from tests.governance.audit import make_vectors

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


# --- an independent verifier, from docs/audit-format.md §3 to §6 ----------------------------------------------


class RejectedError(Exception):
    """The independent verifier says no."""


def h_leaf(entry: bytes) -> bytes:  # §3
    return hashlib.sha256(b"\x00" + entry).digest()


def h_node(left: bytes, right: bytes) -> bytes:  # §3
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves: list[bytes]) -> bytes:  # §3, on leaf hashes, by the recursive definition
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return h_node(mth(leaves[:k]), mth(leaves[k:]))


def check_inclusion(m: int, n: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:  # §5
    if m >= n:
        raise RejectedError("index")
    fn, sn, r = m, n - 1, leaf
    for p in proof:
        if sn == 0:
            raise RejectedError("too long")
        if fn % 2 == 1 or fn == sn:
            r = h_node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = h_node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise RejectedError("inclusion")


def check_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> None:  # §5
    if m > n:
        raise RejectedError("shrank")
    if m == n:
        if proof or r1 != r2:
            raise RejectedError("same size")
        return
    if m == 0:
        if proof:
            raise RejectedError("from empty")
        return
    if not proof:
        raise RejectedError("empty proof")
    if m & (m - 1) == 0:
        proof = [r1, *proof]
    fn, sn = m - 1, n - 1
    while fn % 2 == 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise RejectedError("too long")
        if fn % 2 == 1 or fn == sn:
            fr, sr = h_node(c, fr), h_node(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = h_node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != r1 or sr != r2:
        raise RejectedError("consistency")


def check_tree_head(head: dict[str, Any], public_key: bytes) -> None:  # §4
    key_id = hashlib.sha256(public_key).digest()
    if bytes.fromhex(head["key_id"]) != key_id:
        raise RejectedError("key id")
    signed = (b"citygov/audit/tree-head/v1" + b"\x00" + key_id + struct.pack(">Q", head["tree_size"])
              + struct.pack(">Q", head["timestamp"]) + bytes.fromhex(head["root_hash"]))
    assert len(signed) == 107
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(head["signature"]), signed)
    except InvalidSignature:
        raise RejectedError("signature") from None


def check_bundle(bundle: dict[str, Any], trusted_key: bytes | None) -> None:  # §6
    if bundle["format"] != "citygov-audit-bundle/1":
        raise RejectedError("format")
    key = base64.b64decode(bundle["public_key"])
    if trusted_key is not None and key != trusted_key:
        raise RejectedError("not the log key")
    head = bundle["tree_head"]
    check_tree_head(head, key)
    first, entries = bundle["first_seq"], bundle["entries"]
    last = first + len(entries) - 1
    if first < 0 or not entries or last >= head["tree_size"] or len(bundle["prefix"]) != bin(first).count("1"):
        raise RejectedError("shape")
    stack = [bytes.fromhex(x) for x in bundle["prefix"]]
    for i, text in enumerate(entries):
        data = text.encode("utf-8")
        value = json.loads(data)
        if value.get("seq") != first + i or rfc8785.dumps(value) != data:
            raise RejectedError("entry")
        stack.append(h_leaf(data))
        j = first + i
        while j % 2 == 1:
            right, left = stack.pop(), stack.pop()
            stack.append(h_node(left, right))
            j >>= 1
    root = stack[-1]
    for s in reversed(stack[:-1]):
        root = h_node(s, root)
    check_consistency(last + 1, head["tree_size"], root, bytes.fromhex(head["root_hash"]),
                      [bytes.fromhex(x) for x in bundle["consistency"]])


# --- the vectors ----------------------------------------------------------------------------------------


def hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def test_rfc6962_reference_values() -> None:
    ref = load("rfc6962-reference.json")
    leaves = [h_leaf(bytes.fromhex(x)) for x in ref["leaves"]]
    assert [merkle.leaf_hash(bytes.fromhex(x)) for x in ref["leaves"]] == leaves
    for n, root in enumerate(hexes(ref["roots"])):
        assert mth(leaves[:n]) == root
        assert merkle.root_of(leaves[:n]) == root
    roots = hexes(ref["roots"])
    for case in ref["inclusion"]:
        m, n, proof = case["leaf_index"], case["tree_size"], hexes(case["hashes"])
        assert merkle.inclusion_proof(leaves, m, n) == proof
        merkle.verify_inclusion(m, n, leaves[m], proof, roots[n])
        check_inclusion(m, n, leaves[m], proof, roots[n])
    for case in ref["consistency"]:
        m, n, proof = case["first"], case["second"], hexes(case["hashes"])
        assert merkle.consistency_proof(leaves, m, n) == proof
        merkle.verify_consistency(m, n, roots[m], roots[n], proof)
        check_consistency(m, n, roots[m], roots[n], proof)


def test_small_trees_of_citygov_entries() -> None:
    vec = load("small-trees.json")
    entries = [e.encode("utf-8") for e in vec["entries"]]
    for data, value in zip(entries, vec["entry_objects"], strict=True):
        assert canonical_bytes(value) == data == rfc8785.dumps(value)
    pseudonym_key = bytes.fromhex(vec["pseudonym_key"])
    digest = hmac.new(pseudonym_key, b"urn:ngsi-ld:Person:R-55812", hashlib.sha256).digest()
    pseudonym = "psn:v1:" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()
    assert vec["entry_objects"][0]["subjects"] == [pseudonym]  # §2.2
    leaves = [h_leaf(e) for e in entries]
    assert hexes(vec["leaf_hashes"]) == leaves == [merkle.leaf_hash(e) for e in entries]
    roots = hexes(vec["roots"])
    assert roots == [mth(leaves[:n]) for n in range(len(leaves) + 1)]
    for case in vec["inclusion"]:
        m, n, proof = case["leaf_index"], case["tree_size"], hexes(case["hashes"])
        assert merkle.inclusion_proof(leaves, m, n) == proof
        check_inclusion(m, n, leaves[m], proof, roots[n])
        merkle.verify_inclusion(m, n, leaves[m], proof, roots[n])
    for case in vec["consistency"]:
        m, n, proof = case["first"], case["second"], hexes(case["hashes"])
        assert merkle.consistency_proof(leaves, m, n) == proof
        check_consistency(m, n, roots[m], roots[n], proof)
        merkle.verify_consistency(m, n, roots[m], roots[n], proof)


def test_the_bundle_verifies_both_ways() -> None:
    vec = load("bundle.json")
    trusted = base64.b64decode(vec["trusted_key"])
    check_bundle(vec["bundle"], trusted)
    report = verify_bundle(vec["bundle"], trusted_key=PublicKey(trusted))
    expected = vec["expected"]
    assert (report.first_seq, report.last_seq, report.tree_head.tree_size) == (
        expected["first_seq"], expected["last_seq"], expected["tree_size"])
    assert report.tree_head.root_hash.hex() == expected["root_hash"]


@pytest.mark.parametrize("case", load("tampered-bundles.json")["cases"], ids=lambda c: c["name"])
def test_every_tampered_bundle_is_rejected_both_ways(case: dict[str, Any]) -> None:
    trusted = base64.b64decode(load("tampered-bundles.json")["trusted_key"])
    with pytest.raises(RejectedError):
        check_bundle(case["bundle"], trusted)
    with pytest.raises(VerificationError):
        verify_bundle(case["bundle"], trusted_key=PublicKey(trusted))


def test_the_shipped_vectors_are_what_the_generator_makes() -> None:
    good, bad = make_vectors.bundles()
    for name, document in (("small-trees.json", make_vectors.small_trees()), ("bundle.json", good),
                           ("tampered-bundles.json", bad), ("rfc6962-reference.json", make_vectors.RFC6962_REFERENCE)):
        assert orjson.loads(orjson.dumps(document)) == load(name), f"{name}: run tests/governance/audit/make_vectors.py"
