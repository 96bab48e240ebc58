"""Prometheus metrics of one server process, in the text exposition format (version 0.0.4).

Small on purpose: counters and one latency histogram, updated under a lock, rendered on ``/metrics``.
With several workers each process keeps its own numbers; every series carries no process label, so
scrape each worker (or run one worker per container) — see docs/api.md.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from itertools import accumulate

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
Labels = tuple[tuple[str, str], ...]

_HELP = {
    "citygov_http_requests_total": ("counter", "HTTP requests answered, by method, route and status."),
    "citygov_http_request_duration_seconds": ("histogram", "Time from request start to the end of the response."),
    "citygov_api_auth_failures_total": ("counter", "Signed requests refused, by reason."),
    "citygov_api_data_requests_total": ("counter", "Data requests audited, by decision (allow, deny, invalid…)."),
    "citygov_api_records_released_total": ("counter", "Records released in data responses."),
    "citygov_api_replay_ids_purged_total": ("counter", "Expired request ids deleted from the replay table."),
}


class Metrics:
    """Process-local counters and a histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histogram: dict[Labels, list[float]] = {}
        """Per route: observations in each bucket alone (cumulated when rendered), the last one over every bound."""
        self._sums: dict[Labels, float] = defaultdict(float)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] += amount

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (("method", method), ("route", route), ("status", str(status)))
        timing = (("route", route),)
        with self._lock:
            self._counters["citygov_http_requests_total"][labels] += 1
            counts = self._histogram.get(timing)
            if counts is None:
                counts = self._histogram[timing] = [0.0] * (len(BUCKETS) + 1)
            counts[bisect_left(BUCKETS, seconds)] += 1  # the first bucket with seconds <= bound (+Inf last)
            self._sums[timing] += seconds

    def value(self, name: str, **labels: str) -> float:
        """One counter's value (tests and the benchmark read it)."""
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in _HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    for labels, counts in sorted(self._histogram.items()):
                        for bound, count in zip((*map(_number, BUCKETS), "+Inf"), accumulate(counts), strict=True):
                            lines.append(f"{name}_bucket{_labels((*labels, ('le', bound)))} {_number(count)}")
                        lines.append(f"{name}_sum{_labels(labels)} {self._sums[labels]!r}")
                        lines.append(f"{name}_count{_labels(labels)} {_number(sum(counts))}")
                    continue
                for labels, amount in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(labels)} {_number(amount)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    pairs = [f'{key}="{_escape(value)}"' for key, value in labels]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
