"""Sample inputs and golden outputs of the adapters, shared by the standard suite and regeneration.

Layout, for every registered adapter ``<name>``:

- ``adapters/samples/<name>/messages.jsonl`` (captured messages) or exactly one ``*.csv`` file;
- ``adapters/samples/<name>/config.json`` when the adapter needs configuration;
- ``tests/adapters/golden/<name>.jsonl``: one line per input record, ``{"line": n, "entities": [...]}``
  (plus ``"removed_fields": {entity id: [names]}`` when an entity notes removed input fields) or
  ``{"line": n, "rejected": "<reason>"}``. ``n`` is the record's ``context["line"]`` when the reader
  sets it, else its 1-based position in the file.

Regenerate one golden file from the current output, then review the diff line by line::

    python -m tests.adapters.make_golden <adapter-name>
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import orjson

from adapters.base import ENTRY_POINT_GROUP, Adapter
from governance.errors import InvalidRecordError

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "adapters" / "samples"
GOLDEN = REPO / "tests" / "adapters" / "golden"
#: Fixed so that sample files without their own ``received_at`` parse the same every time.
RECEIVED_AT = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
MAX_BYTES = 262_144


def sample_input(name: str) -> Path:
    """The one sample input file of adapter ``name``."""
    folder = SAMPLES / name
    capture = folder / "messages.jsonl"
    if capture.is_file():
        return capture
    csvs = sorted(folder.glob("*.csv"))
    if len(csvs) != 1:
        raise FileNotFoundError(
            f"adapter {name!r} ships no sample: expected {capture.relative_to(REPO)} "
            f"or exactly one *.csv in {folder.relative_to(REPO)} (found {len(csvs)})"
        )
    return csvs[0]


def sample_config(name: str) -> Path | None:
    path = SAMPLES / name / "config.json"
    return path if path.is_file() else None


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.jsonl"


def adapter_names() -> list[str]:
    """Every adapter name declared under the entry-point group, without importing any of them.

    (``registered_adapters()`` imports them all, so one missing module would hide every adapter;
    here each adapter passes or fails on its own.)
    """
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_adapter_class(name: str) -> type[Adapter]:
    """Import the one adapter registered as ``name``, with the checks ``registered_adapters`` makes."""
    (ep,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    cls = ep.load()
    assert isinstance(cls, type) and issubclass(cls, Adapter), f"{name!r} is not an Adapter subclass"
    assert cls.name == name, f"entry point {name!r} loads adapter named {cls.name!r}"
    return cls


def build_adapter(name: str) -> Adapter:
    return load_adapter_class(name).from_config_file(sample_config(name))


def run_sample(name: str) -> list[dict[str, Any]]:
    """What adapter ``name`` makes of its sample file now, one golden-format dict per record."""
    adapter = build_adapter(name)
    out: list[dict[str, Any]] = []
    for index, message in enumerate(
        adapter.read(sample_input(name), received_at=RECEIVED_AT, max_bytes=MAX_BYTES), start=1
    ):
        line = int(message.context.get("line", index))
        if message.defect is not None:
            out.append({"line": line, "rejected": message.defect.reason})
            continue
        try:
            entities = adapter.parse(message)
        except InvalidRecordError as exc:
            out.append({"line": line, "rejected": exc.reason})
            continue
        row: dict[str, Any] = {"line": line, "entities": [e.data for e in entities]}
        removed = {e.entity_id: list(e.removed_fields) for e in entities if e.removed_fields}
        if removed:
            row["removed_fields"] = removed
        out.append(row)
    return out


def read_golden(name: str) -> list[dict[str, Any]]:
    path = golden_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"adapter {name!r} has no golden file {path.relative_to(REPO)}; "
            f"write it with: python -m tests.adapters.make_golden {name} (then review it)"
        )
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_golden(name: str) -> Path:
    path = golden_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = run_sample(name)
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.adapters.make_golden <adapter-name>", file=sys.stderr)
        return 2
    path = write_golden(argv[0])
    print(f"wrote {path.relative_to(REPO)}; review it before committing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
