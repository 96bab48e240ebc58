"""A separate process appending to the audit log, for the concurrency and crash tests.

    python -m tests.governance.audit.writer DATABASE_URL DATA_DIR NAME BATCHES BATCH_SIZE [PAUSE]

``BATCHES`` 0 means forever (the crash test kills it); ``PAUSE`` seconds between appends lets other
writers in (SQLite's busy handler is not fair: a writer that just committed usually wins again).
Prints ``ready`` once the log is open, so the tests can start several writers at the same moment.
"""

from __future__ import annotations

import sys
import time
from itertools import count
from pathlib import Path

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.store.db import create_db_engine


def main() -> None:
    url, data_dir, name, batches, size = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    engine = create_db_engine(url)
    log = AuditLog.open(engine, data_dir)
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go"
    for batch in count() if batches == 0 else range(batches):
        log.append([
            AuditEvent(actor=f"worker:{name}", action="data.request", stage="use", dataset="monitoring.noise",
                       decision="allow", refs={"batch": batch, "item": item})
            for item in range(size)
        ])
        if pause:
            time.sleep(pause)
    print("done", flush=True)


if __name__ == "__main__":
    main()
