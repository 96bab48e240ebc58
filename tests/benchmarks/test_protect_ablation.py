"""The protection benchmark's ablation steps leave out exactly what they say, and nothing else (SQLite, PostgreSQL).

They only exist in ``benchmarks/protect.py``; the numbers they give in BENCHMARKS.md mean something only if a
``no-sealing`` row is unsealed yet pseudonymized, a ``no-columns`` row sealed yet without its columns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.ingest import generate, read
from benchmarks.protect import FEED, VARIANTS, governed_run
from governance.demo import FeedFile
from governance.protect.fieldcrypt import is_sealed
from governance.protect.pseudonym import is_pseudonym
from governance.store.tables import EntityRecord

_ENTITY = EntityRecord.__table__  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> FeedFile:
    return generate(FEED, 120, tmp_path_factory.mktemp("feed"))


@pytest.mark.parametrize("variant", [None, *VARIANTS])
def test_each_variant_leaves_out_only_its_part(variant: str | None, feed: FeedFile, database_url: str,
                                               tmp_path: Path) -> None:
    settings, engine, pipeline, adapter = governed_run(database_url, tmp_path / "data", feed, protection=True,
                                                       variant=variant)
    try:
        report = pipeline.ingest(adapter, read(adapter, feed, settings))
        with engine.connect() as conn:
            rows = conn.execute(select(_ENTITY).where(_ENTITY.c.entity_type == "ResidentObservation")).all()
    finally:
        engine.dispose()
    assert report.balanced and report.entities > 50
    assert rows
    options = VARIANTS.get(variant or "", {"seal": True, "columns": True, "pseudonyms": True})
    for row in rows:
        data = row.data
        assert is_pseudonym(data["refResident"])  # always: data keys are looked up by it
        assert is_sealed(data["observationType"]) is options["seal"]
        assert is_pseudonym(data["refDevice"]) is options["pseudonyms"]
        assert (row.subject == data["refResident"]) is options["columns"]
        assert (row.retain_until is not None) is options["columns"]
        assert (row.policy_revision is not None) is options["columns"]
