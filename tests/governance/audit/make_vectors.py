"""Regenerate the audit test vectors: ``.venv/bin/python -m tests.governance.audit.make_vectors``.

``rfc6962-reference.json`` holds published Certificate Transparency values (copied, not computed);
the other files are computed with citygov's code from fixed inputs (fixed keys, fixed times), so they
change only when the format does — and then docs/audit-format.md must change with them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.audit.bundle import BUNDLE_FORMAT
from governance.audit.canonical import canonical_bytes, format_time
from governance.audit.entries import AuditEvent, build_entry
from governance.audit.keys import LogKeys
from governance.audit.merkle import consistency_proof, inclusion_proof, leaf_hash, pieces, range_hash, root_of
from governance.audit.treehead import TreeHead

VECTORS = Path(__file__).parent / "vectors"
TEST_SIGNING_SEED = bytes(range(32))
OTHER_SIGNING_SEED = bytes(range(32, 64))
TEST_SUBJECT_KEY = bytes.fromhex("5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7")
"""Stands for the keyring's pseudonym key in the vectors (and for the legacy log subject key in ``LogKeys``)."""
START = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
BUNDLE_TIMESTAMP_MS = 1_795_161_600_000  # 2026-11-20T06:00:00Z

# Published with the Certificate Transparency reference implementations (RFC 6962 test data): leaves,
# the tree hash of every prefix, and known proofs (leaf indexes are 0-based here).
RFC6962_REFERENCE: dict[str, Any] = {
    "source": "Certificate Transparency reference test data (RFC 6962), as shipped with its implementations",
    "leaves": ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"],
    "roots": [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ],
    "inclusion": [
        {"leaf_index": 0, "tree_size": 8, "hashes": [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]},
        {"leaf_index": 5, "tree_size": 8, "hashes": [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]},
        {"leaf_index": 2, "tree_size": 3, "hashes": [
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]},
        {"leaf_index": 1, "tree_size": 5, "hashes": [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]},
    ],
    "consistency": [
        {"first": 1, "second": 8, "hashes": [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]},
        {"first": 6, "second": 8, "hashes": [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]},
        {"first": 2, "second": 5, "hashes": [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]},
    ],
}


def vector_keys(seed: bytes = TEST_SIGNING_SEED) -> LogKeys:
    return LogKeys(signing_key=Ed25519PrivateKey.from_private_bytes(seed), subject_key=TEST_SUBJECT_KEY)


def sample_events(count: int) -> list[AuditEvent]:
    """Varied entries, including the string escapes RFC 8785 cares about."""
    kinds = [
        AuditEvent(actor="adapter:care-hub", action="ingest.batch", stage="collection", decision="partial",
                   reasons=["timestamp_without_zone"], subjects=["urn:ngsi-ld:Person:R-55812"],
                   refs={"read": 5, "accepted": 4, "quarantined": 1, "duplicates": 0,
                         "datasets": ["care.alert", "care.observation"]}),
        AuditEvent(actor="adapter:care-hub", action="ingest.quarantine", stage="collection", decision="quarantined",
                   reasons=["timestamp_without_zone"], refs={"step": "parse", "count": 1}),
        AuditEvent(actor="department:social-care", action="data.request", stage="use", dataset="care.observation",
                   purpose="fall-follow-up", decision="allow", policy_revision="r-7",
                   subjects=["urn:ngsi-ld:Person:R-55812", "urn:ngsi-ld:Person:R-60344"], refs={"rows": 12}),
        AuditEvent(actor="department:research", action="data.request", stage="sharing", dataset="care.observation",
                   purpose="Überwachung ☃ \"quoted\" \\ tab\t nl\n \u0001 \u007f \u2028 😀", decision="deny",
                   reasons=["no_agreement", "purpose_not_allowed"], policy_revision="r-7"),
        AuditEvent(actor="system:retention", action="retention.sweep", stage="storage",
                   dataset="monitoring.noise", decision="allow", refs={"expired": 1024, "z": None, "a": [True, False]}),
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


def vector_pseudonym(subject: str, key: bytes = TEST_SUBJECT_KEY) -> str:
    """§2.2: ``psn:v1:`` + lowercase unpadded base32 of HMAC-SHA256(pseudonym key, UTF-8 id)."""
    digest = hmac.new(key, subject.encode("utf-8"), hashlib.sha256).digest()
    return "psn:v1:" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def entries_bytes(count: int, keys: LogKeys) -> list[bytes]:
    out = []
    for seq, event in enumerate(sample_events(count)):
        pseudonyms = [vector_pseudonym(s) for s in event.subjects]
        time_text = format_time(START + timedelta(seconds=seq, microseconds=seq * 7))
        out.append(canonical_bytes(build_entry(event, seq, time_text, pseudonyms)))
    return out


def small_trees() -> dict[str, Any]:
    keys = vector_keys()
    entries = entries_bytes(11, keys)
    hashes = [leaf_hash(e) for e in entries]
    return {
        "description": "citygov entries (RFC 8785 bytes, as UTF-8 strings), leaf hashes, the root of every "
                       "prefix, every inclusion proof and every consistency proof for sizes 1..11",
        "pseudonym_key": TEST_SUBJECT_KEY.hex(),
        "entries": [e.decode("utf-8") for e in entries],
        "entry_objects": [orjson.loads(e) for e in entries],
        "leaf_hashes": [h.hex() for h in hashes],
        "roots": [root_of(hashes[:n]).hex() for n in range(len(hashes) + 1)],
        "inclusion": [{"leaf_index": m, "tree_size": n, "hashes": [h.hex() for h in inclusion_proof(hashes, m, n)]}
                      for n in range(1, len(hashes) + 1) for m in range(n)],
        "consistency": [{"first": m, "second": n, "hashes": [h.hex() for h in consistency_proof(hashes, m, n)]}
                        for n in range(1, len(hashes) + 1) for m in range(1, n + 1)],
    }


def make_bundle(keys: LogKeys, entries: list[bytes], first: int, last: int, size: int,
                timestamp_ms: int = BUNDLE_TIMESTAMP_MS) -> dict[str, Any]:
    hashes = [leaf_hash(e) for e in entries[:size]]
    head = TreeHead.sign(keys, size, root_of(hashes), timestamp_ms)
    return {
        "format": BUNDLE_FORMAT,
        "public_key": keys.public.b64,
        "key_id": keys.public.key_id,
        "tree_head": head.as_json(),
        "first_seq": first,
        "last_seq": last,
        "entries": [e.decode("utf-8") for e in entries[first : last + 1]],
        "prefix": [range_hash(hashes, (i << lv, (i + 1) << lv)).hex() for lv, i in pieces(0, first)],
        "consistency": [h.hex() for h in consistency_proof(hashes, last + 1, size)],
    }


def bundles() -> tuple[dict[str, Any], dict[str, Any]]:
    keys, other = vector_keys(), vector_keys(OTHER_SIGNING_SEED)
    entries = entries_bytes(12, keys)
    good = make_bundle(keys, entries, 3, 9, 12)
    tampered: list[dict[str, Any]] = []

    def variant(name: str, change: Any, *, why: str) -> None:
        bad = copy.deepcopy(good)
        change(bad)
        assert bad != good, name
        tampered.append({"name": name, "why": why, "bundle": bad})

    def edit_entry(b: dict[str, Any]) -> None:  # still canonical, same seq: only the content differs
        b["entries"][2] = canonical_bytes(orjson.loads(b["entries"][2]) | {"decision": "edited"}).decode("utf-8")

    def swap(b: dict[str, Any]) -> None:
        b["entries"][1], b["entries"][2] = b["entries"][2], b["entries"][1]

    def drop_middle(b: dict[str, Any]) -> None:
        del b["entries"][3]
        b["last_seq"] -= 1

    def truncate(b: dict[str, Any]) -> None:
        del b["entries"][-1]
        b["last_seq"] -= 1

    def truncate_quietly(b: dict[str, Any]) -> None:
        del b["entries"][-1]

    def other_key(b: dict[str, Any]) -> None:
        b["tree_head"] = make_bundle(other, entries, 3, 9, 12)["tree_head"]

    def other_key_everywhere(b: dict[str, Any]) -> None:
        forged = make_bundle(other, entries, 3, 9, 12)
        b.update(public_key=forged["public_key"], key_id=forged["key_id"], tree_head=forged["tree_head"])

    def bigger_size(b: dict[str, Any]) -> None:
        b["tree_head"]["tree_size"] = 13

    def bad_prefix(b: dict[str, Any]) -> None:
        b["prefix"][0] = "00" * 32

    def bad_consistency(b: dict[str, Any]) -> None:
        b["consistency"] = b["consistency"][:-1]

    variant("edited entry", edit_entry, why="an entry's content changed")
    variant("reordered entries", swap, why="two entries swapped")
    variant("entry removed", drop_middle, why="an entry removed from the middle")
    variant("tail truncated", truncate, why="the last entry removed")
    variant("tail truncated, last_seq kept", truncate_quietly, why="the last entry removed, the header left as it was")
    variant("tree head from another key", other_key, why="tree head signed by a key that is not the bundle's")
    variant("everything from another key", other_key_everywhere,
            why="tree head and public key replaced: rejected when the log key is pinned (trusted_key)")
    variant("tree size changed", bigger_size, why="the signed tree size edited")
    variant("prefix hash changed", bad_prefix, why="a prefix hash is wrong")
    variant("consistency proof cut", bad_consistency, why="a consistency proof hash missing")
    expected = {"root_hash": good["tree_head"]["root_hash"], "tree_size": 12, "first_seq": 3, "last_seq": 9}
    return ({"description": "entries 3..9 of a 12-entry log, signed with the test key (Ed25519 seed 00 01 .. 1f)",
             "trusted_key": keys.public.b64, "expected": expected, "bundle": good},
            {"description": "variants of bundle.json that a verifier must reject (with trusted_key pinned)",
             "trusted_key": keys.public.b64, "cases": tampered})


def write(name: str, document: Any) -> None:
    (VECTORS / name).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def main() -> None:
    VECTORS.mkdir(exist_ok=True)
    write("rfc6962-reference.json", RFC6962_REFERENCE)
    write("small-trees.json", small_trees())
    good, bad = bundles()
    write("bundle.json", good)
    write("tampered-bundles.json", bad)
    print(f"wrote vectors to {VECTORS} (test key {base64.b64encode(vector_keys().public.raw).decode()})")


if __name__ == "__main__":
    main()
