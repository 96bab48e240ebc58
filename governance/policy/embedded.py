"""The embedded engine: the policies compiled in-process by regopy (Microsoft rego-cpp).

How regopy 1.5.2 is used here, and why:

- one ``Interpreter`` per thread and revision, built once with every stage's entry point and then
  queried with ``query_bundle_entrypoint`` (about 0.1 to 1 ms); ``Interpreter.query`` recompiles on every call
  and is never used; ``build`` is never called twice on an interpreter (entry points would accumulate);
- the output of a failed evaluation is never turned into a string (that can crash the process): a
  failed output is an ``engine_error`` deny;
- compile errors are reported as ``file:line: message`` from the error text, not from an output;
- time reaches the policies as RFC 3339 with ``+00:00`` (``time.parse_rfc3339_ns`` is undefined for a
  trailing ``Z`` in 1.5.2) and ``common.instant_ns`` accepts both forms in data documents and tests;
- v0 syntax, ``time.now_ns``, ``sprintf("%q")`` and ``with`` inside comprehensions are refused when the
  bundle is loaded (:mod:`governance.policy.lint`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import regopy

from governance.policy.bundle import PolicyBundle, entrypoint
from governance.policy.engine import FailClosedEngine
from governance.policy.errors import PolicyBundleError, PolicyEngineError
from governance.policy.model import Stage

_ERROR = re.compile(r"\(error \d+:(?P<file>[^|\s]+)\|(?P<offset>\d+)\|\d+\s+\(errormsg \d+:(?P<msg>[^)]*)\)")


@dataclass
class CompiledPolicies:
    """One interpreter and what it built: used by one thread only."""

    interpreter: regopy.Interpreter
    compiled: regopy.Bundle
    entrypoints: frozenset[str]

    def query(self, entry: str, document: Mapping[str, Any]) -> Any:
        """The value of ``entry`` for ``document`` as input; ``None`` when undefined."""
        if entry not in self.entrypoints:
            raise PolicyEngineError("engine_error", f"{entry} is not an entry point of this bundle")
        self.interpreter.set_input_term(orjson.dumps(document).decode("utf-8"))
        try:
            output = self.interpreter.query_bundle_entrypoint(self.compiled, entry)
        except ValueError:  # regopy parses its own output: a sprintf of a computed string breaks that JSON
            raise PolicyEngineError("engine_error", f"{entry} produced invalid JSON in the embedded engine (a "
                                    "sprintf of a string computed by a builtin? build texts with concat)") from None
        if not output.ok():  # never str() a failed output
            raise PolicyEngineError("engine_error", f"evaluation of {entry} failed in the embedded engine")
        if len(output) == 0 or not output[0].expressions:
            return None
        return output[0].expressions[0]


def compile_modules(
    modules: Mapping[str, str], data: Mapping[str, Any], entrypoints: Iterable[str]
) -> CompiledPolicies:
    """Add modules and data to a fresh interpreter and build it once for ``entrypoints``."""
    interpreter = regopy.Interpreter()
    entries = sorted(set(entrypoints))
    try:
        for path, source in sorted(modules.items()):
            interpreter.add_module(path, source)
        interpreter.add_data_json(orjson.dumps(dict(data)).decode("utf-8"))
        compiled = interpreter.build(None, entries)
    except regopy.RegoError as exc:
        raise PolicyBundleError("policies do not compile:\n  " + describe_rego_error(str(exc), modules)) from None
    if not compiled.ok():
        raise PolicyBundleError("policies do not compile (the embedded engine gave no detail)")
    return CompiledPolicies(interpreter, compiled, frozenset(entries))


def describe_rego_error(message: str, modules: Mapping[str, str]) -> str:
    """``file:line: message`` lines from rego-cpp's error tree (which gives byte offsets)."""
    lines = []
    for match in _ERROR.finditer(message):
        path, offset = match["file"], int(match["offset"])
        source = modules.get(path, "")
        line = source[:offset].count("\n") + 1 if source else 0
        lines.append(f"{path}:{line}: {match['msg']}")
    return "\n  ".join(lines) if lines else message.strip()[:500]


class EmbeddedEngine(FailClosedEngine):
    """Decides in-process; compiled once per thread (the first decision on a thread pays the compile)."""

    name = "embedded"

    def __init__(self, bundle: PolicyBundle, *, timeout_ms: int = 2000) -> None:
        super().__init__(bundle, timeout_ms=timeout_ms)
        self._entries = {stage: entrypoint(stage) for stage in Stage}
        self._local = threading.local()
        self._local.compiled = self._compile()  # a bundle that does not compile is a configuration error

    def _compile(self) -> CompiledPolicies:
        return compile_modules(self.bundle.modules, self.bundle.data, self._entries.values())

    def _prepare(self) -> None:
        if getattr(self._local, "compiled", None) is None:
            try:
                self._local.compiled = self._compile()
            except PolicyBundleError as exc:
                raise PolicyEngineError("engine_error", str(exc)) from None

    def _query(self, stage: Stage, document: dict[str, Any]) -> Any:
        compiled: CompiledPolicies = self._local.compiled
        return compiled.query(self._entries[stage], document)
