"""Files an auditor takes away: checkpoints (one signed tree head) and export bundles.

A bundle is one JSON document holding a contiguous run of entries ``#first..#last`` exactly as stored,
the signed tree head they fall under, the log's public key, and the hashes that tie the run to that
head: ``prefix`` (the complete subtrees covering entries before the run) and ``consistency`` (an RFC 6962
consistency proof from size ``last + 1`` to the head's size). ``docs/audit-format.md`` §6 has the layout
and the verification steps; ``verify.verify_bundle`` implements them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, select

from governance.audit.errors import AuditRangeError, VerificationError
from governance.audit.keys import PublicKey
from governance.audit.log import latest_tree_head
from governance.audit.proofs import consistency_proof, prefix_hashes
from governance.audit.tables import ENTRY
from governance.audit.treehead import TreeHead

BUNDLE_FORMAT = "citygov-audit-bundle/1"
CHECKPOINT_FORMAT = "citygov-audit-checkpoint/1"


def export_bundle(
    conn: Connection, key: PublicKey, first: int | None = None, last: int | None = None
) -> dict[str, Any]:
    """Entries ``#first..#last`` (inclusive; default the whole log) under the latest signed tree head."""
    head = latest_tree_head(conn)
    if head is None or head.tree_size == 0:
        raise AuditRangeError("the log has no signed entries to export")
    first = 0 if first is None else first
    last = head.tree_size - 1 if last is None else last
    if not 0 <= first <= last < head.tree_size:
        raise AuditRangeError(f"entries #{first}..#{last} are not all under the latest tree head "
                              f"(size {head.tree_size})")
    rows = conn.execute(select(ENTRY.c.seq, ENTRY.c.entry).where(ENTRY.c.seq.between(first, last))
                        .order_by(ENTRY.c.seq)).all()
    if len(rows) != last - first + 1:
        raise VerificationError(f"entries are missing between #{first} and #{last}: run `citygov audit verify`")
    return {
        "format": BUNDLE_FORMAT,
        "public_key": key.b64,
        "key_id": key.key_id,
        "tree_head": head.as_json(),
        "first_seq": first,
        "last_seq": last,
        "entries": [bytes(data).decode("utf-8") for _, data in rows],
        "prefix": [h.hex() for h in prefix_hashes(conn, first)],
        "consistency": [h.hex() for h in consistency_proof(conn, last + 1, head.tree_size).hashes],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def read_json(path: Path, what: str) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise VerificationError(f"cannot read {what} {path}: {exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise VerificationError(f"{what} {path} is not JSON: {exc}") from exc


def checkpoint_document(head: TreeHead, key: PublicKey) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "public_key": key.b64, "tree_head": head.as_json()}


def read_checkpoint(path: Path) -> TreeHead:
    """The tree head saved in a checkpoint file (its signature is checked by the verifier, not here)."""
    document = read_json(path, "checkpoint")
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise VerificationError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    return TreeHead.from_json(document.get("tree_head"))
