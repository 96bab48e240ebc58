"""Pseudonyms: stable, keyed, one format; per-recipient pseudonyms that two departments cannot link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine

from governance.protect.errors import ProtectionError
from governance.protect.pseudonym import Pseudonyms, is_pseudonym
from governance.store.db import create_db_engine, init_schema
from tests.governance.protect.support import KEY_OTHER, keyring

RESIDENT = "urn:ngsi-ld:Person:R-55812"


@pytest.fixture
def names(sqlite_engine: Engine) -> Pseudonyms:
    return Pseudonyms(keyring(sqlite_engine))


def test_format_is_stable_and_hides_the_id(names: Pseudonyms) -> None:
    value = names.of(RESIDENT)
    assert re.fullmatch(r"psn:v1:[a-z2-7]{52}", value)
    assert is_pseudonym(value)
    assert value == names.of(RESIDENT)
    assert "55812" not in value
    assert names.of("urn:ngsi-ld:Person:R-55813") != value
    assert names.of("urn:ngsi-ld:Device:R-55812") != value  # the whole id is hashed, type included


def test_lookups_by_real_id_go_through_the_same_function(names: Pseudonyms) -> None:
    stored = names.of(RESIDENT)
    assert names.subject_ref(RESIDENT) == stored
    assert names.subject_ref(stored) == stored  # an already stored pseudonym is kept
    assert names.many([RESIDENT, RESIDENT, "b"]) == {RESIDENT: stored, "b": names.of("b")}


def test_another_key_gives_unrelated_pseudonyms(names: Pseudonyms, tmp_path: Path) -> None:
    other_engine = create_db_engine(f"sqlite:///{tmp_path / 'other.db'}")
    init_schema(other_engine)
    try:
        other = Pseudonyms(keyring(other_engine, (1, KEY_OTHER)))
        assert other.of(RESIDENT) != names.of(RESIDENT)
    finally:
        other_engine.dispose()


def test_recipient_pseudonyms_differ_per_recipient_and_are_stable(names: Pseudonyms) -> None:
    stored = names.of(RESIDENT)
    energy = names.for_recipient(stored, "dept:energy")
    care = names.for_recipient(stored, "dept:social-care")
    assert energy.startswith("rpsn:v1:") and care.startswith("rpsn:v1:")
    assert len({energy, care, stored}) == 3
    assert names.for_recipient(RESIDENT, "dept:energy") == energy  # from the real id or the pseudonym alike
    assert names.for_recipient(stored, "dept:energy") == energy
    other = names.for_recipient(names.of("urn:ngsi-ld:Person:R-1"), "dept:energy")
    assert other != energy
    assert not is_pseudonym(energy)  # a recipient's value is never mistaken for a stored subject


@pytest.mark.parametrize("bad", ["", " dept", "dept energy", "x" * 129, "dépt"])
def test_recipients_must_be_plain_names(names: Pseudonyms, bad: str) -> None:
    with pytest.raises(ProtectionError):
        names.for_recipient(RESIDENT, bad)


@pytest.mark.parametrize("bad", ["", "x" * 3000])
def test_empty_or_huge_identifiers_are_refused_without_echo(names: Pseudonyms, bad: str) -> None:
    with pytest.raises(ProtectionError) as caught:
        names.of(bad)
    assert "xxxx" not in str(caught.value)


def test_a_column_of_identifiers_gets_the_same_pseudonyms_as_one_by_one(names: Pseudonyms) -> None:
    column = [RESIDENT, "b", RESIDENT, "c", "b"]
    names.of("c")  # one in the memo already, the others not
    assert names.column(column) == [names.of(value) for value in column]
    assert names.column(column) == [names.of(value) for value in column]  # all from the memo now
    assert names.column([]) == []
    with pytest.raises(ProtectionError):
        names.column([RESIDENT, ""])  # checked as by ``of``


def test_remembered_answers_only_for_identifiers_already_hashed(names: Pseudonyms) -> None:
    assert names.remembered([RESIDENT]) is None  # not hashed yet
    stored = names.of(RESIDENT)
    assert names.remembered([RESIDENT, RESIDENT]) == [stored, stored]
    assert names.remembered([RESIDENT, None]) is None
    assert names.remembered([RESIDENT, ""]) is None
    assert names.remembered([RESIDENT, ["a"]]) is None  # unhashable: no error, no answer
    assert names.remembered([]) == []
