"""Signed tree heads: (tree size, root hash, timestamp) signed with the log's Ed25519 key.

The signed bytes (``docs/audit-format.md`` §4) are fixed-width binary, not JSON, so an independent
verifier rebuilds them without a canonicalizer:

    "citygov/audit/tree-head/v1" || 0x00 || key id (32) || tree size (u64 BE) || timestamp ms (u64 BE) || root (32)
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from governance.audit.errors import VerificationError
from governance.audit.keys import LogKeys, PublicKey
from governance.audit.merkle import HASH_SIZE

TREE_HEAD_CONTEXT = b"citygov/audit/tree-head/v1\x00"


def tree_head_message(tree_size: int, timestamp_ms: int, root_hash: bytes, key_id: str) -> bytes:
    """The exact bytes a tree head signature covers."""
    if len(root_hash) != HASH_SIZE:
        raise ValueError("root hash must be 32 bytes")
    return TREE_HEAD_CONTEXT + bytes.fromhex(key_id) + struct.pack(">QQ", tree_size, timestamp_ms) + root_hash


@dataclass(frozen=True)
class TreeHead:
    """One signed tree head, as stored and as published."""

    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: str
    signature: bytes

    @classmethod
    def sign(cls, keys: LogKeys, tree_size: int, root_hash: bytes, timestamp_ms: int) -> TreeHead:
        key_id = keys.public.key_id
        signature = keys.sign(tree_head_message(tree_size, timestamp_ms, root_hash, key_id))
        return cls(tree_size, root_hash, timestamp_ms, key_id, signature)

    def message(self) -> bytes:
        return tree_head_message(self.tree_size, self.timestamp_ms, self.root_hash, self.key_id)

    def problem_with(self, key: PublicKey) -> str | None:
        """Why this tree head is not a valid signature of ``key`` — or ``None`` when it is."""
        if self.key_id != key.key_id:
            return f"is signed by key {self.key_id[:16]}…, not the log key {key.key_id[:16]}…"
        if not key.verifies(self.signature, self.message()):
            return "has a signature that does not verify with the log key"
        return None

    def check(self, key: PublicKey, what: str = "tree head") -> None:
        problem = self.problem_with(key)
        if problem:
            raise VerificationError(f"{what} (size {self.tree_size}) {problem}")

    def as_json(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp_ms,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Any) -> TreeHead:
        try:
            head = cls(
                tree_size=_non_negative(data["tree_size"]),
                root_hash=bytes.fromhex(data["root_hash"]),
                timestamp_ms=_non_negative(data["timestamp"]),
                key_id=str(data["key_id"]),
                signature=base64.b64decode(data["signature"], validate=True),
            )
            bytes.fromhex(head.key_id)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise VerificationError(f"malformed tree head: {exc!r}") from exc
        if len(head.root_hash) != HASH_SIZE or len(head.key_id) != 64 or len(head.signature) != 64:
            raise VerificationError("malformed tree head: wrong length of root hash, key id or signature")
        return head


def _non_negative(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value
