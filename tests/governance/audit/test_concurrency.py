"""Several real processes appending to one log; a writer killed mid-append. The log stays linear and verifies."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
from sqlalchemy import Engine, func, select

from governance.audit.log import AuditLog
from governance.audit.tables import ENTRY, TREE_HEAD
from governance.audit.verify import verify_log
from tests.governance.audit.conftest import request

ROOT = Path(__file__).parents[3]
WRITERS, BATCHES, BATCH_SIZE = 3, 25, 20


def start_writer(database_url: str, data_dir: Path, name: str, batches: int, size: int,
                 pause: float = 0.0) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.governance.audit.writer", database_url, str(data_dir), name, str(batches),
         str(size), str(pause)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "ready", (line, process.stderr.read() if process.stderr else "")
    return process


def go(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()


def test_concurrent_writer_processes_make_one_linear_log(audit_log: AuditLog, engine: Engine, data_dir: Path,
                                                         database_url: str) -> None:
    audit_log.append([request(0)])  # keys and head exist before the workers start
    writers = [start_writer(database_url, data_dir, f"w{i}", BATCHES, BATCH_SIZE, 0.005) for i in range(WRITERS)]
    for process in writers:  # all open and waiting: release them together
        go(process)
    checks = 0
    while any(p.poll() is None for p in writers):  # an auditor verifying the live log meanwhile
        verify_log(engine, audit_log.public_key)
        checks += 1
    assert checks >= 1
    for process in writers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == "done"
    total = 1 + WRITERS * BATCHES * BATCH_SIZE
    with engine.connect() as conn:
        rows = conn.execute(select(ENTRY.c.seq, ENTRY.c.entry).order_by(ENTRY.c.seq)).all()
        tree_heads = conn.execute(select(func.count()).select_from(TREE_HEAD)).scalar()
    assert [seq for seq, _ in rows] == list(range(total))  # no gaps, no duplicates
    entries = [orjson.loads(data) for _, data in rows]
    assert Counter(e["actor"] for e in entries[1:]) == {f"worker:w{i}": BATCHES * BATCH_SIZE for i in range(WRITERS)}
    for i in range(WRITERS):  # each append's entries are contiguous and in order: appends never interleave
        mine = [(e["seq"], e["refs"]["batch"], e["refs"]["item"]) for e in entries if e["actor"] == f"worker:w{i}"]
        assert [(b, it) for _, b, it in mine] == [(b, it) for b in range(BATCHES) for it in range(BATCH_SIZE)]
        for start in range(0, len(mine), BATCH_SIZE):
            batch = [seq for seq, _, _ in mine[start : start + BATCH_SIZE]]
            assert batch == list(range(batch[0], batch[0] + BATCH_SIZE))
    assert tree_heads == 1 + WRITERS * BATCHES
    switches = sum(1 for a, b in itertools.pairwise(entries[1:]) if a["actor"] != b["actor"])
    print(f"writers took turns {switches} times")
    assert switches >= WRITERS, "the writers did not actually run at the same time"
    report = verify_log(engine, audit_log.public_key)
    assert (report.entries, report.tree_heads) == (total, tree_heads)


def test_a_writer_killed_mid_stream_leaves_a_log_that_verifies(audit_log: AuditLog, engine: Engine, data_dir: Path,
                                                               database_url: str) -> None:
    audit_log.append([request(0)])
    process = start_writer(database_url, data_dir, "doomed", 0, 200)
    go(process)
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            if (conn.execute(select(func.count()).select_from(ENTRY)).scalar() or 0) >= 1000:
                break
        assert time.monotonic() < deadline, "the writer did not get going"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    report = verify_log(engine, audit_log.public_key)
    assert report.entries >= 1000 and (report.entries - 1) % 200 == 0  # whole appends only
    audit_log.append([request(1), request(2)])  # the log goes on where the killed writer's last commit left it
    assert verify_log(engine, audit_log.public_key).entries == report.entries + 2
