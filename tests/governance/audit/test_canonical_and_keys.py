"""Canonical JSON against the reference RFC 8785 encoder; the log's key files and pseudonyms."""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import random
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from governance.audit.canonical import canonical_bytes, format_time, is_canonical, parse_time
from governance.audit.errors import AuditKeyError, InvalidAuditEventError
from governance.audit.keys import (
    PUBLIC_KEY_FILE,
    SIGNING_KEY_FILE,
    SUBJECT_KEY_FILE,
    LogKeys,
    PublicKey,
    audit_dir,
    load_public_key,
)

ALPHABET = ["a", "Z", "0", " ", '"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "é", "€",
            "\u2028", "\ufeff", "😀", "\U0010ffff", "ÿ"]


def random_string(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 6)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randrange(-(2**53) + 1, 2**53)
    if kind == 2:
        return rng.choice([0, 1, -1, 10, 2**31])
    if kind == 3:
        return random_string(rng)
    if kind == 4:
        return rng.choice([0.5, -1.25, 1e21, 1e-7, 123456789.125, 0.1])
    if kind in (5, 6):
        keys = ["a", "b", "B", "aa", "", "z1", "ké", "€", "😀", "\ufb01", "\U00010000", "\uffff"]
        return {rng.choice(keys) if rng.random() < 0.3 else random_string(rng) or "k": random_value(rng, depth + 1)
                for _ in range(rng.randrange(0, 5))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]


def test_canonical_bytes_equal_the_reference_encoder_on_random_values() -> None:
    rng = random.Random(8785)
    for _ in range(3000):
        value = random_value(rng)
        assert canonical_bytes(value) == rfc8785.dumps(value), value
        assert is_canonical(rfc8785.dumps(value))


def test_sorting_follows_utf16_code_units_not_code_points() -> None:
    # U+FB01 sorts after U+10000 by code point but before it in UTF-16 (surrogates D800.. < FB01)
    value = {"\ufb01": 1, "\U00010000": 2}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes(value).index("\U00010000".encode()) < canonical_bytes(value).index("\ufb01".encode())


def test_non_canonical_text_is_recognized() -> None:
    assert is_canonical(b'{"a":1,"b":[true,null]}')
    for text in (b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":"\\u00e9"}', b'{"a":1.0}', b"not json", b'{"a":"\\/"}'):
        assert not is_canonical(text), text


def test_values_outside_i_json_are_refused() -> None:
    with pytest.raises(InvalidAuditEventError):
        canonical_bytes({"n": 2**60})
    with pytest.raises(InvalidAuditEventError):
        canonical_bytes({"n": float("nan")})


def test_times_are_fixed_width_utc() -> None:
    moment = datetime(2026, 3, 29, 1, 30, 5, 42, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2026-03-28T23:30:05.000042Z"
    assert parse_time(format_time(moment)) == moment
    assert len(format_time(datetime(1, 1, 1, tzinfo=UTC))) == 27
    with pytest.raises(InvalidAuditEventError):
        format_time(datetime(2026, 1, 1))


# --- keys ----------------------------------------------------------------------------------------------


def test_keys_are_created_once_with_restricted_permissions(data_dir: Path) -> None:
    keys = LogKeys.load_or_create(data_dir)
    folder = audit_dir(data_dir)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (SIGNING_KEY_FILE, SUBJECT_KEY_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / PUBLIC_KEY_FILE).stat().st_mode) == 0o644
    again = LogKeys.load_or_create(data_dir)
    assert again.public == keys.public
    assert again.subject_key == keys.subject_key
    assert load_public_key(data_dir) == keys.public
    assert (folder / PUBLIC_KEY_FILE).read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_a_secret_readable_by_others_is_refused(data_dir: Path) -> None:
    LogKeys.load_or_create(data_dir)
    path = audit_dir(data_dir) / SIGNING_KEY_FILE
    path.chmod(0o640)
    with pytest.raises(AuditKeyError, match="chmod 600"):
        LogKeys.load(data_dir)


def test_a_damaged_key_file_is_refused(data_dir: Path) -> None:
    LogKeys.load_or_create(data_dir)
    (audit_dir(data_dir) / SUBJECT_KEY_FILE).write_text("not hex")
    with pytest.raises(AuditKeyError, match="hex"):
        LogKeys.load(data_dir)


def _create_and_report(data_dir: str) -> str:
    return LogKeys.load_or_create(Path(data_dir)).public.key_id


def test_workers_starting_together_end_up_with_one_key(data_dir: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        ids = pool.map(_create_and_report, [str(data_dir)] * 8)
    assert len(set(ids)) == 1
    assert sorted(p.name for p in audit_dir(data_dir).iterdir()) == sorted(
        [SIGNING_KEY_FILE, SUBJECT_KEY_FILE, PUBLIC_KEY_FILE])  # no temporary files left behind


def test_public_keys_read_from_pem_or_base64_and_sign(data_dir: Path) -> None:
    keys = LogKeys.load_or_create(data_dir)
    public = keys.public
    assert PublicKey.from_text(public.pem()) == public
    assert PublicKey.from_text(public.b64) == public
    assert public.key_id == hashlib.sha256(public.raw).hexdigest()
    assert public.verifies(keys.sign(b"message"), b"message")
    assert not public.verifies(keys.sign(b"message"), b"other message")
    with pytest.raises(AuditKeyError):
        PublicKey.from_text("bm90IGEga2V5")


def test_pseudonyms_are_keyed_hmacs(data_dir: Path) -> None:
    keys = LogKeys.load_or_create(data_dir)
    subject = "urn:ngsi-ld:Person:R-55812"
    expected = hmac.new(keys.subject_key, subject.encode(), hashlib.sha256).hexdigest()
    assert keys.pseudonymize(subject) == expected
    other = LogKeys.load_or_create(data_dir.parent / "other-city")
    assert other.pseudonymize(subject) != expected
