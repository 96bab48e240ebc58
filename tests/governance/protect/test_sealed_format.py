"""Values sealed by earlier versions still open: the ``enc:v1`` format and its associated data are fixed.

The tokens below were written by the batch sealer as it was before it worked column by column (2026-11-24),
under a fixed data key and fixed nonces. Every reader — ``open_value`` with ``field_aad``, as
``FieldProtector.reveal`` uses them — must open them for as long as ``enc:v1`` exists, and the writer of today
must still produce the same format: same length, same associated data, and, for a given nonce, the same bytes.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from governance.protect import fieldcrypt
from governance.protect.errors import DecryptionError
from governance.protect.fieldcrypt import NONCE_BYTES, PREFIX, field_aad, open_value

DEK = bytes(range(64, 96))
SUBJECT = "psn:v1:" + "a" * 52
ENTITY = "psn:v1:" + "b" * 52
OTHER_ENTITY = "urn:ngsi-ld:X:1"
OBSERVED = datetime(2026, 1, 4, 23, 12, 23, 500, tzinfo=UTC)

#: (entity id, observation time, field, plaintext value, token as stored)
GOLDEN: list[tuple[str, datetime | None, str, Any, str]] = [
    (ENTITY, OBSERVED, "confidence", 0.86, "enc:v1:AAECAwQFBgcICQoLCitUTm3bsnkv_2N9_5Kg7uvupTw"),
    (ENTITY, OBSERVED, "dateObserved", "2026-01-04T23:12:23Z",
     "enc:v1:DA0ODxAREhMUFRYX50BO4w6gw25EC3oaOtGxGO4ngssgYGefPpjfNilCOawHhNsFxqI"),
    (ENTITY, OBSERVED, "note", {"a": [1, "zwei", None]},
     "enc:v1:GBkaGxwdHh8gISIjEe2Z2e6BhqTtXi_7mtpsTWJuTS8HU9hzW-fJrJZXcoL-l8oEnQ"),
    (ENTITY, OBSERVED, "numValue", 71, "enc:v1:JCUmJygpKissLS4v5Ucip8y4nTOXhBM_GoyUMtGh"),
    (ENTITY, OBSERVED, "observationType", "heartRate", "enc:v1:MDEyMzQ1Njc4OTo7o7-HXgrMmYKBfPYEO1uKZiM1QzKisjSUjqhw"),
    (OTHER_ENTITY, None, "numValue", "Zürich ✓",
     "enc:v1:PD0-P0BBQkNERUZHaNcCj9FCw5BEK7ljuyz-AaRdYAFs7QAJnZiVUXs"),
]


def _nonce(token: str) -> bytes:
    body = token[len(PREFIX):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))[:NONCE_BYTES]


@pytest.mark.parametrize(("entity_id", "observed", "name", "value", "token"), GOLDEN)
def test_values_sealed_before_still_open(entity_id: str, observed: datetime | None, name: str, value: Any,
                                         token: str) -> None:
    aead = AESGCM(DEK)
    assert open_value(aead, token, field_aad(entity_id, observed, name, SUBJECT)) == value
    with pytest.raises(DecryptionError):  # still bound to its place
        open_value(aead, token, field_aad(entity_id, observed, name + "x", SUBJECT))


def test_the_batch_sealer_writes_the_same_bytes_for_the_same_nonces() -> None:
    """Each value sealed today, under the nonce a golden token carries, is that token, byte for byte."""
    nonces = {(entity_id, name): _nonce(token) for entity_id, _, name, _, token in GOLDEN}
    for entity_id, observed, name, value, token in GOLDEN:
        row = {"id": entity_id, "type": "ResidentObservation", name: value}
        with mock.patch.object(fieldcrypt.os, "urandom", lambda n, nonce=nonces[entity_id, name]: nonce * (n // 12)):
            fieldcrypt._seal_rows([row], [SUBJECT], [observed], [name], {SUBJECT: AESGCM(DEK)})
        assert row[name] == token


def test_the_batch_sealer_keeps_rows_and_fields_apart() -> None:
    """Two rows of two subjects, fields present in some rows only: every value opens in its own place only."""
    keys = {SUBJECT: AESGCM(DEK), "psn:v1:" + "c" * 52: AESGCM(bytes(32))}
    subjects = [SUBJECT, "psn:v1:" + "c" * 52, SUBJECT]
    rows: list[dict[str, Any]] = [{"id": "e1", "a": 1, "b": "x"}, {"id": "e2", "b": [2]}, {"id": "e3", "a": None}]
    originals = [dict(row) for row in rows]
    times: list[datetime | None] = [OBSERVED, None, OBSERVED]
    fieldcrypt._seal_rows(rows, subjects, times, ["a", "b", "c"], keys)
    tokens = []
    for row, original, subject, when in zip(rows, originals, subjects, times, strict=True):
        assert set(row) == set(original)
        for name in set(original) - {"id"}:
            assert open_value(keys[subject], row[name], field_aad(str(row["id"]), when, name, subject)) \
                == original[name]
            tokens.append(row[name])
    assert len({_nonce(t) for t in tokens}) == len(tokens) == 4


def test_heads_of_times_whose_instants_differ_in_length_bind_each_its_own_time() -> None:
    """Observation times from 1969 to 2286 give instants of 1 to 17 characters: in one block, mixed or all alike,
    every value opens under its own time only."""
    key = {SUBJECT: AESGCM(DEK)}
    times: list[datetime | None] = [datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
                                    datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), OBSERVED,
                                    datetime(2286, 11, 20, 17, 46, 40, tzinfo=UTC)]
    for block in (times, times[3:4] * 3, times[:1] * 2):
        rows: list[dict[str, Any]] = [{"id": f"e{i}", "a": i} for i in range(len(block))]
        fieldcrypt._seal_rows(rows, [SUBJECT] * len(rows), block, ["a"], key)
        for i, (row, when) in enumerate(zip(rows, block, strict=True)):
            assert open_value(key[SUBJECT], row["a"], field_aad(f"e{i}", when, "a", SUBJECT)) == i
            other = block[0] if when != block[0] else datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)
            with pytest.raises(DecryptionError):
                open_value(key[SUBJECT], row["a"], field_aad(f"e{i}", other, "a", SUBJECT))
