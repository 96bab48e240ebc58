"""``citygov policy test``: every ``*_test.rego`` run on the embedded engine, with OPA's conventions.

A test is a rule named ``test_*`` in a ``package <pkg>_test`` module; it passes when it is ``true``
and fails when it is false or undefined (as in ``opa test``). ``todo_test_*`` rules are skipped.
Test modules go through the same quirk guards as policies, and their ``with`` clauses are carried out
by this runner rather than by regopy (see :mod:`governance.policy.with_clauses`).
"""

from __future__ import annotations

import copy
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.catalog import SchemaCatalog
from governance.policy.bundle import PolicyBundle, bundle_from_files, entrypoint, folder_files, rego_test_modules
from governance.policy.embedded import CompiledPolicies, compile_modules
from governance.policy.engine import parse_result
from governance.policy.errors import PolicyBundleError, PolicyEngineError
from governance.policy.lint import lint_module
from governance.policy.model import Stage
from governance.policy.with_clauses import StrippedModule, strip_with_clauses
from governance.resources import data_folder

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_UNDEFINED = ("'with … as {}' is undefined outside the test body: build 'with' values from literals, rules or "
              "functions of the test package, not from local variables")


@dataclass(frozen=True)
class RegoTestResult:
    package: str
    name: str
    file: str
    outcome: str
    """``pass``, ``fail``, ``error`` or ``skip``."""
    duration_ms: float
    detail: str = ""


@dataclass(frozen=True)
class RegoTestReport:
    revision: str
    results: tuple[RegoTestResult, ...]

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.outcome in ("pass", "skip") for r in self.results)

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)


@dataclass
class _Case:
    file: str
    package: str
    name: str
    overrides: dict[str, str]

    @property
    def entry(self) -> str:
        return f"{self.package.replace('.', '/')}/{self.name}"


def run_tests(folder: Path | None = None, catalog: SchemaCatalog | None = None) -> RegoTestReport:
    """Compile the bundle of ``folder`` with its tests and evaluate every test rule."""
    folder = folder or data_folder("policies")
    bundle = bundle_from_files(folder_files(folder, catalog), origin=str(folder))
    tests = rego_test_modules(folder)
    problems: list[str] = []
    stripped: dict[str, StrippedModule] = {}
    cases: list[_Case] = []
    for path, source in tests.items():
        problems.extend(lint_module(path, source))
        package = _PACKAGE.search(source)
        if package is None or not package.group(1).endswith("_test"):
            problems.append(f"{path}: a test module's package must be named <package>_test")
            continue
        module = strip_with_clauses(path, source)
        problems.extend(module.problems)
        stripped[path] = module
        cases.extend(_Case(path, package.group(1), r.name, r.overrides) for r in module.rules)
    if problems:
        raise PolicyBundleError("policy tests refused:\n  " + "\n  ".join(problems))
    results: dict[int, RegoTestResult] = {}
    runnable = [c for c in cases if not c.name.startswith("todo_")]
    values, failed = _with_values(bundle, stripped, runnable)
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[_Case]] = defaultdict(list)
    for case in runnable:
        groups[(case.file, tuple(sorted((t, v) for t, v in case.overrides.items() if t != "input")))].append(case)
    modules = {**bundle.modules, **{p: m.source for p, m in stripped.items()}}
    for (path, data_overrides), members in groups.items():
        try:
            data = _with_data(bundle.data, {target: values[(path, value)] for target, value in data_overrides})
        except KeyError:
            data = None
        entries = {c.entry for c in members} | {entrypoint(stage) for stage in Stage}
        compiled = compile_modules(modules, data, entries) if data is not None else None
        for case in members:
            started = time.perf_counter()
            missing = [v for t, v in case.overrides.items() if (case.file, v) not in values]
            if compiled is None or missing:
                why = failed.get((case.file, missing[0])) if missing else None
                results[id(case)] = _result(case, "error", started, why or _UNDEFINED.format(
                    missing[0][:60] if missing else "a data override"))
                continue
            document = values[(case.file, case.overrides["input"])] if "input" in case.overrides else {}
            try:
                value = compiled.query(case.entry, document)
            except PolicyEngineError as exc:
                results[id(case)] = _result(case, "error", started, exc.detail)
                continue
            problem = _decision_problem(compiled, document, bundle.revision)
            if problem is not None:
                results[id(case)] = _result(case, "error", started, problem)
                continue
            detail = "" if value is True else ("undefined" if value is None else f"evaluated to {value!r}")
            results[id(case)] = _result(case, "pass" if value is True else "fail", started, detail)
    ordered = [results.get(id(c)) or RegoTestResult(c.package, c.name, c.file, "skip", 0.0) for c in cases]
    return RegoTestReport(bundle.revision, tuple(ordered))


def _with_values(bundle: PolicyBundle, stripped: Mapping[str, StrippedModule],
                 cases: list[_Case]) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], str]]:
    """Evaluate every distinct ``with`` value, as a rule of its test package, with an empty input."""
    names: dict[tuple[str, str], str] = {}
    for case in cases:
        for value in case.overrides.values():
            names.setdefault((case.file, value), f"__citygov_with_{len(names)}")
    if not names:
        return {}, {}
    packages = {c.file: c.package.replace(".", "/") for c in cases}

    def evaluate(keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        wanted: dict[str, list[str]] = defaultdict(list)
        for path, value in keys:
            wanted[path].append(f"\n{names[(path, value)]} := {value}\n")
        modules = {**bundle.modules, **{p: m.source for p, m in stripped.items()}}
        for path, extra in wanted.items():
            modules[path] = modules[path] + "".join(extra)
        compiled = compile_modules(modules, bundle.data, {f"{packages[p]}/{names[(p, v)]}" for p, v in keys})
        found = {}
        for path, value in keys:
            result = compiled.query(f"{packages[path]}/{names[(path, value)]}", {})
            if result is not None:
                found[(path, value)] = result
        return found

    try:
        return evaluate(list(names)), {}
    except PolicyBundleError:
        pass  # find the value that does not compile, one by one
    values: dict[tuple[str, str], Any] = {}
    failed: dict[tuple[str, str], str] = {}
    for key in names:
        try:
            values.update(evaluate([key]))
        except PolicyBundleError:
            failed[key] = _UNDEFINED.format(key[1][:60]).replace("is undefined", "does not compile")
    return values, failed


def _decision_problem(compiled: CompiledPolicies, document: Any, revision: str) -> str | None:
    """Whether the decision of the test input's stage comes out as the decision shape, as JSON.

    Rego tests look inside the decision; this also checks what the engines would hand back, which is
    where the embedded engine's garbled ``sprintf`` output or a mistyped obligation shows up.
    """
    stage = document.get("stage") if isinstance(document, dict) else None
    if stage not in {s.value for s in Stage}:
        return None
    try:
        raw = compiled.query(entrypoint(Stage(stage)), document)
    except PolicyEngineError as exc:
        return f"the {stage} decision for this input fails: {exc.detail}"
    if raw is None:
        return None
    decision = parse_result(raw, revision, Stage(stage))
    if decision.failure is not None:
        return f"the {stage} decision for this input is not a decision: {decision.reasons[0].detail}"
    return None


def _with_data(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    patched = copy.deepcopy(dict(data))
    for target, value in overrides.items():
        keys = target.split(".")[1:]
        node = patched
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = value
    return patched


def _result(case: _Case, outcome: str, started: float, detail: str = "") -> RegoTestResult:
    return RegoTestResult(case.package, case.name, case.file, outcome, (time.perf_counter() - started) * 1000, detail)
