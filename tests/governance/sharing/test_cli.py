"""``citygov agreement``: add, list, show, revoke, and an ODRL export/import round trip through files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from governance.cli.main import app
from governance.config import Settings

runner = CliRunner()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"CITYGOV_DATA_DIR": str(settings.data_dir), "CITYGOV_DATABASE_URL": settings.resolved_database_url()}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


ADD = ["agreement", "add", "dsa-c-1", "--title", "Noise for a research group", "--provider", "environment",
       "--recipient", "acoustics-lab", "--dataset", "monitoring.noise", "--purpose", "research",
       "--field", "LAeq", "--field", "location", "--valid-from", "2026-01-01T00:00:00Z",
       "--valid-until", "2027-01-01T00:00:00+01:00", "--quota-per-day", "100", "--epsilon-budget", "2",
       "--obligation", '{"kind": "generalize_location", "grid_m": 500}', "--actor", "cli:tester"]


def test_add_list_show_revoke(env: dict[str, str]) -> None:
    added = runner.invoke(app, [*ADD, "--json"])
    assert added.exit_code == 0, added.output
    body = orjson.loads(added.stdout)
    assert body["valid_until"] == "2026-12-31T23:00:00Z" and body["quota_per_day"] == 100
    listed = orjson.loads(runner.invoke(app, ["agreement", "list", "--json"]).stdout)
    assert {a["id"] for a in listed} >= {"dsa-c-1", "dsa-2026-001"}
    shown = runner.invoke(app, ["agreement", "show", "dsa-c-1", "--json"])
    assert orjson.loads(shown.stdout)["usage"] == {"requests_today": 0, "epsilon_spent": 0.0,
                                                   "epsilon_remaining": 2.0, "dp_answers": 0}
    text = runner.invoke(app, ["agreement", "show", "dsa-c-1"])
    assert text.exit_code == 0 and "acoustics-lab" in text.stdout
    again = runner.invoke(app, ADD)
    assert again.exit_code == 2 and "already exists" in again.output
    revoked = runner.invoke(app, ["agreement", "revoke", "dsa-c-1", "--json"])
    assert revoked.exit_code == 0 and orjson.loads(revoked.stdout)["status"] == "revoked"
    listed = orjson.loads(runner.invoke(app, ["agreement", "list", "--json"]).stdout)
    assert "dsa-c-1" not in {a["id"] for a in listed}
    with_revoked = orjson.loads(runner.invoke(app, ["agreement", "list", "--all", "--json"]).stdout)
    assert "dsa-c-1" in {a["id"] for a in with_revoked}
    table = runner.invoke(app, ["agreement", "list"])
    assert table.exit_code == 0 and "dsa-2026-001" in table.stdout


@pytest.mark.parametrize(("change", "message"), [
    (["--obligation", "{not json"], "JSON object"),
    (["--obligation", '{"kind": "k_anonymity", "k": 1, "quasi_identifiers": ["location"]}'], "obligations"),
    (["--valid-until", "yesterday"], "valid_until"),
    (["--dataset", "monitoring.nothing"], "unknown dataset"),
])
def test_bad_input_exits_2_with_a_message(env: dict[str, str], change: list[str], message: str) -> None:
    result = runner.invoke(app, [*ADD, *change])
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_agreements_exit_2(env: dict[str, str]) -> None:
    for command in (["show", "nope"], ["revoke", "nope"], ["export", "nope"]):
        assert runner.invoke(app, ["agreement", *command]).exit_code == 2


def test_odrl_export_then_import_is_the_same_agreement(env: dict[str, str], tmp_path: Path) -> None:
    assert runner.invoke(app, ADD).exit_code == 0
    exported = tmp_path / "dsa.jsonld"
    assert runner.invoke(app, ["agreement", "export", "dsa-c-1", "--out", str(exported)]).exit_code == 0
    policy = orjson.loads(exported.read_bytes())
    assert policy["@type"] == "Agreement" and policy["uid"] == "urn:citygov:agreement:dsa-c-1"
    before = orjson.loads(runner.invoke(app, ["agreement", "show", "dsa-c-1", "--json"]).stdout)
    refused = runner.invoke(app, ["agreement", "import", str(exported)])
    assert refused.exit_code == 2 and "already exists" in refused.output
    renamed = tmp_path / "dsa2.jsonld"
    policy["uid"] = "urn:citygov:agreement:dsa-c-2"
    renamed.write_bytes(orjson.dumps(policy))
    imported = runner.invoke(app, ["agreement", "import", str(renamed), "--json"])
    assert imported.exit_code == 0, imported.output
    after = orjson.loads(imported.stdout)
    same = ("title", "provider", "recipient", "recipient_kind", "datasets", "purposes", "fields", "valid_from",
            "valid_until", "basis", "obligations", "quota_per_day", "epsilon_budget")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    stdout = runner.invoke(app, ["agreement", "export", "dsa-c-2"])
    assert orjson.loads(stdout.stdout)["uid"] == "urn:citygov:agreement:dsa-c-2"


def test_import_refuses_what_is_not_an_odrl_agreement(env: dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{]")
    assert runner.invoke(app, ["agreement", "import", str(junk)]).exit_code == 2
    junk.write_text('{"@type": "Offer"}')
    assert runner.invoke(app, ["agreement", "import", str(junk)]).exit_code == 2
    assert runner.invoke(app, ["agreement", "import", str(tmp_path / "missing.json")]).exit_code == 2


def test_help_describes_the_commands() -> None:
    result = runner.invoke(app, ["agreement", "--help"])
    assert result.exit_code == 0
    for command in ("add", "list", "show", "revoke", "import", "export"):
        assert command in result.stdout
