"""Python's cyclic garbage collector paused for the length of a batch.

A batch keeps tens of thousands of records alive at once (raw messages, parsed entities, rows), none of
which form reference cycles: they are freed by reference counting when the batch ends. While they live,
every allocation counts toward the collector's thresholds, so collections run again and again over the
same live objects, up to full collections that walk the whole heap — measured at 10 to 18 % of ingest time
(`benchmarks/ingest.py`). Pausing the collector for the batch and resuming it afterwards removes that
work; the few cycles a batch may create (exceptions, tracebacks) are collected after it.

Pauses nest and may overlap across threads (a listener and a file ingest in one process): the collector
is disabled while any pause is open, and enabled again when the last one closes — unless it was
disabled before the first one opened, in which case it stays as it was.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_open = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block (see the module docstring)."""
    global _open, _was_enabled
    with _lock:
        if _open == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _open += 1
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0 and _was_enabled:
                gc.enable()


__all__ = ["collection_paused"]
