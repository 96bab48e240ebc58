"""Rego ``with`` clauses in test modules, taken apart so that regopy never evaluates them.

regopy 1.5.2 crashes its compiler (``shape rego-localref has no field rego-refhead``) as soon as a
rule evaluated under ``with input as …`` depends on another rule, and it silently mis-evaluates
``with data.x as <rule>``. So ``citygov policy test`` does what ``with`` means itself: it removes the
clauses from each test rule, evaluates their values separately, and runs the test on an interpreter
whose input (and data, for data overrides) *is* that value.

The test files stay ordinary OPA tests; the convention that makes this exact is:

- one value per target in a test rule (every ``with input as`` in ``test_x`` names the same value);
- the value is a literal, a rule or a function call of the test package — not a local variable of
  the test body (it is evaluated outside the body);
- targets are ``input`` as a whole or a path under ``data`` that is a data document, not a policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TEST_HEAD = re.compile(r"^((?:todo_)?test_\w+)\b")
_WITH = re.compile(r"\bwith\s+(?P<target>input|data(?:\.[A-Za-z_][\w-]*)+)\s+as\s+")
_WORD_WITH = re.compile(r"\s+with\b")


@dataclass
class RuleWithClauses:
    """One test rule: where it is, and the values of its ``with`` clauses by target."""

    name: str
    start: int
    end: int
    overrides: dict[str, str] = field(default_factory=dict)
    """``"input"`` or ``"data.a.b"`` → the value's source text."""


@dataclass
class StrippedModule:
    source: str
    """The module with every ``with`` clause of its test rules blanked out (line numbers kept)."""
    rules: list[RuleWithClauses]
    problems: list[str]


def strip_with_clauses(path: str, source: str) -> StrippedModule:
    """Find the test rules of a module and take their ``with`` clauses out."""
    text = list(source)
    rules: list[RuleWithClauses] = []
    problems: list[str] = []
    for rule in _test_rules(source):
        position = rule.start
        while True:
            match = _WITH.search(source, position, rule.end)
            if match is None or _in_comment_or_string(source, match.start()):
                if match is None:
                    break
                position = match.end()
                continue
            value_end = _term_end(source, match.end(), rule.end)
            value = source[match.end():value_end].strip()
            target = match.group("target")
            line = source.count("\n", 0, match.start()) + 1
            if not value:
                problems.append(f"{path}:{line}: {rule.name}: 'with {target} as' has no value")
            elif target.startswith("data.citygov"):
                problems.append(f"{path}:{line}: {rule.name}: the embedded engine overrides data documents, not "
                                f"policies ({target})")
            elif rule.overrides.get(target, value) != value:
                problems.append(f"{path}:{line}: {rule.name}: the embedded engine runs one value per 'with {target}' "
                                "in a test; split the test")
            rule.overrides[target] = value
            for i in range(match.start(), value_end):
                if text[i] != "\n":
                    text[i] = " "
            position = value_end
        rules.append(rule)
    return StrippedModule("".join(text), rules, problems)


def _test_rules(source: str) -> list[RuleWithClauses]:
    """Test rules with their spans: from the head to the next top-level statement."""
    heads: list[tuple[int, str | None]] = []
    offset = 0
    for line in source.splitlines(keepends=True):
        if line[:1].isalpha() or line[:1] == "_":
            match = _TEST_HEAD.match(line)
            heads.append((offset, match.group(1) if match else None))
        offset += len(line)
    heads.append((len(source), None))
    return [RuleWithClauses(name, start, heads[i + 1][0]) for i, (start, name) in enumerate(heads[:-1]) if name]


def _term_end(source: str, start: int, limit: int) -> int:
    """Where the term starting at ``start`` ends: at depth 0, a newline, ``;``, ``}`` or another ``with``."""
    depth = 0
    i = start
    while i < limit:
        char = source[i]
        if char in "\"`":
            i = _string_end(source, i)
            continue
        if char == "#":
            return i
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and (char in "\n;" or _WORD_WITH.match(source, i)):
            return i
        i += 1
    return limit


def _string_end(source: str, start: int) -> int:
    quote = source[start]
    i = start + 1
    while i < len(source):
        if quote == '"' and source[i] == "\\":
            i += 2
            continue
        if source[i] == quote:
            return i + 1
        i += 1
    return i


def _in_comment_or_string(source: str, position: int) -> bool:
    line_start = source.rfind("\n", 0, position) + 1
    i = line_start
    while i < position:
        char = source[i]
        if char in "\"`":
            end = _string_end(source, i)
            if end > position:
                return True
            i = end
            continue
        if char == "#":
            return True
        i += 1
    return False
