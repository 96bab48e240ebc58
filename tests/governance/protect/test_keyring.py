"""The master key and the keyring: sources, refusals, dev mode, stored secrets, rotation of the key file."""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from governance.config import Settings
from governance.protect.errors import DecryptionError, KeyConfigurationError
from governance.protect.keyring import Keyring
from governance.protect.masterkey import MasterKeys, add_key_version, dev_key_path
from governance.protect.pseudonym import Pseudonyms
from tests.governance.protect.support import KEY_OTHER, KEY_V1, KEY_V2, b64, keyring, master


def test_a_bare_key_is_version_1_and_the_highest_version_wraps() -> None:
    assert MasterKeys.parse(b64(KEY_V1), source="t").versions == (1,)
    keys = MasterKeys.parse(f"v2:{b64(KEY_V2)}, v1:{b64(KEY_V1)}", source="t")
    assert keys.versions == (1, 2) and keys.current == 2
    version, blob = keys.seal(b"secret", b"aad", label="test")
    assert version == 2
    assert keys.open(2, blob, b"aad", label="test") == b"secret"
    with pytest.raises(DecryptionError):
        keys.open(1, blob, b"aad", label="test")  # another version is another key
    with pytest.raises(DecryptionError):
        keys.open(2, blob, b"other aad", label="test")
    with pytest.raises(DecryptionError):
        keys.open(2, blob, b"aad", label="other label")  # labels derive distinct keys


def test_url_safe_base64_and_line_separated_files_are_accepted() -> None:
    import base64

    urlsafe = base64.urlsafe_b64encode(KEY_V2).decode().rstrip("=")
    keys = MasterKeys.parse(f"# rotated 2026-11\nv1:{b64(KEY_V1)}\nv2:{urlsafe}\n", source="t")
    assert keys.versions == (1, 2)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "v1:tooshort", f"{b64(KEY_V1)},{b64(KEY_V2)}", f"v1:{b64(KEY_V1)},v1:{b64(KEY_V2)}",
     f"v0:{b64(KEY_V1)}", "v1:!!!!" + b64(KEY_V1)[4:], b64(KEY_V1 + b"x")],
)
def test_malformed_or_empty_key_lists_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(KeyConfigurationError) as caught:
        MasterKeys.parse(text, source="CITYGOV_MASTER_KEY")
    message = str(caught.value)
    assert "CITYGOV_MASTER_KEY" in message
    for part in (b64(KEY_V1), b64(KEY_V2), b64(KEY_V1)[4:20]):
        assert part not in message


def test_an_empty_key_mapping_is_refused() -> None:
    with pytest.raises(KeyConfigurationError, match="empty"):
        MasterKeys({}, source="test")


def test_outside_dev_mode_a_missing_key_is_refused_and_nothing_is_generated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", dev_mode=False)
    with pytest.raises(KeyConfigurationError, match="CITYGOV_MASTER_KEY"):
        MasterKeys.from_settings(settings)
    assert not dev_key_path(settings.data_dir).exists()


def test_outside_dev_mode_a_generated_dev_key_is_not_picked_up(tmp_path: Path) -> None:
    MasterKeys.from_settings(Settings(data_dir=tmp_path / "d", dev_mode=True))
    with pytest.raises(KeyConfigurationError):
        MasterKeys.from_settings(Settings(data_dir=tmp_path / "d", dev_mode=False))


def test_dev_mode_generates_a_private_key_file_once_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "d", dev_mode=True)
    with caplog.at_level(logging.WARNING, logger="governance.protect.masterkey"):
        first = MasterKeys.from_settings(settings)
        second = MasterKeys.from_settings(settings)
    path = dev_key_path(settings.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "DEV MODE" in warnings[0].getMessage() and str(path) in warnings[0].getMessage()
    _, blob = first.seal(b"x", b"", label="t")
    assert second.open(1, blob, b"", label="t") == b"x"  # the same key, read back


def test_key_file_must_be_private_and_exclusive_with_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(f"v1:{b64(KEY_V1)}\n")
    path.chmod(0o644)
    with pytest.raises(KeyConfigurationError, match="chmod 600"):
        MasterKeys.from_settings(Settings(data_dir=tmp_path, master_key_file=path, dev_mode=False))
    path.chmod(0o600)
    assert MasterKeys.from_settings(Settings(data_dir=tmp_path, master_key_file=path, dev_mode=False)).current == 1
    with pytest.raises(KeyConfigurationError, match="not both"):
        MasterKeys.from_settings(
            Settings(data_dir=tmp_path, master_key_file=path, master_key=SecretStr(b64(KEY_V1)), dev_mode=False)
        )
    with pytest.raises(KeyConfigurationError, match="cannot read"):
        MasterKeys.from_settings(Settings(data_dir=tmp_path, master_key_file=tmp_path / "nope", dev_mode=False))


def test_add_key_version_appends_a_new_current_version_and_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f"v1:{b64(KEY_V1)}\n".encode())
    os.close(fd)
    old = MasterKeys.from_settings(Settings(master_key_file=path, dev_mode=False))
    _, blob = old.seal(b"old data", b"", label="t")
    assert add_key_version(path) == 2
    new = MasterKeys.from_settings(Settings(master_key_file=path, dev_mode=False))
    assert new.versions == (1, 2) and new.current == 2
    assert new.open(1, blob, b"", label="t") == b"old data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_stored_secrets_are_created_once_and_shared(sqlite_engine: Engine) -> None:
    a, b = keyring(sqlite_engine), keyring(sqlite_engine)
    assert Pseudonyms(a).of("urn:ngsi-ld:Person:R-1") == Pseudonyms(b).of("urn:ngsi-ld:Person:R-1")
    assert a.receipt_key().kid == b.receipt_key().kid


def test_a_different_master_key_on_the_same_database_is_a_clear_error(sqlite_engine: Engine) -> None:
    keyring(sqlite_engine).pseudonym_key()
    with pytest.raises(KeyConfigurationError, match="not the master key") as caught:
        keyring(sqlite_engine, (1, KEY_OTHER)).pseudonym_key()
    assert b64(KEY_OTHER) not in str(caught.value) and b64(KEY_V1) not in str(caught.value)


def test_rotation_keeps_pseudonyms_and_receipt_keys_and_lets_the_old_version_go(sqlite_engine: Engine) -> None:
    before = keyring(sqlite_engine)
    name, kid = Pseudonyms(before).of("urn:ngsi-ld:Person:R-1"), before.receipt_key().kid
    rotated = keyring(sqlite_engine, (1, KEY_V1), (2, KEY_V2))
    assert Pseudonyms(rotated).of("urn:ngsi-ld:Person:R-1") == name
    with pytest.raises(KeyConfigurationError, match="v1"):
        keyring(sqlite_engine, (2, KEY_V2)).pseudonym_key()  # not re-wrapped yet: v1 still needed
    assert rotated.rewrap() == 2
    assert rotated.rewrap() == 0
    after = keyring(sqlite_engine, (2, KEY_V2))
    assert Pseudonyms(after).of("urn:ngsi-ld:Person:R-1") == name
    assert after.receipt_key().kid == kid


def test_key_objects_cannot_be_pickled(sqlite_engine: Engine) -> None:
    ring = keyring(sqlite_engine)
    for thing in (ring, ring.master, ring.pseudonym_key(), ring.receipt_key(), master()):
        with pytest.raises(TypeError):
            pickle.dumps(thing)


def test_keyring_from_settings_uses_the_configured_key(sqlite_engine: Engine, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, master_key=SecretStr(f"v1:{b64(KEY_V1)}"), dev_mode=False)
    ring = Keyring.from_settings(settings, sqlite_engine)
    assert ring.master.versions == (1,) and ring.master.source == "CITYGOV_MASTER_KEY"
    assert Pseudonyms(ring).of("x") == Pseudonyms(keyring(sqlite_engine)).of("x")
