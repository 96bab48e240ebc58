"""Guards that keep policy authors away from the embedded engine's known quirks (regopy 1.5.2).

rego-cpp accepts some things OPA refuses, and refuses or crashes on some things OPA accepts. A
bundle that would behave differently on the two engines, or could crash the process, is refused at
load time with a line number, instead of surprising anyone at decision time:

- v0 rule bodies (``allow { … }``, ``deny[msg] { … }``): regopy accepts them silently, OPA 1.x does not;
- ``time.now_ns()``: a decision must be replayable, so time comes from ``input.context.time``;
- ``sprintf`` with ``%q``: not supported by regopy;
- ``sprintf`` of a string computed by a builtin (``concat``, ``upper``…): regopy quotes it without
  escaping, which breaks its JSON output; join text with ``concat`` instead;
- ``with input as`` inside a comprehension: can crash regopy's compiler;
- ``# METADATA`` keys OPA does not know (OPA refuses the module, regopy ignores comments).

The checks read the source line by line (comments and string contents removed); they are guards for
the patterns named above, not a Rego parser.
"""

from __future__ import annotations

import re

_TOP_LEVEL_NAME = re.compile(r"^[A-Za-z_][\w.]*")
_KEYWORD_START = ("package", "import", "default", "else")
_METADATA_KEYS = frozenset({"scope", "title", "description", "related_resources", "authors", "organizations",
                            "schemas", "entrypoint", "custom"})
_METADATA_KEY = re.compile(r"^#\s(\w+):")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_STRING_BUILTIN_IN_SPRINTF = re.compile(
    r"\bsprintf\(.*\b(concat|upper|lower|replace|substring|trim|trim_prefix|trim_suffix|trim_space|"
    r"format_int|sprintf|json\.marshal)\("
)


def lint_module(path: str, source: str) -> list[str]:
    """Problems found in one module, as ``path:line: message`` strings (empty when clean)."""
    problems: list[str] = []
    has_package = False
    in_metadata = False
    for number, raw in enumerate(source.splitlines(), start=1):
        if raw.strip() == "# METADATA":
            in_metadata = True
            continue
        if in_metadata and raw.startswith("#"):
            key = _METADATA_KEY.match(raw)
            if key and key.group(1) not in _METADATA_KEYS:
                problems.append(f"{path}:{number}: METADATA key {key.group(1)!r} is not one OPA knows")
            continue
        in_metadata = False
        code = _code_of(raw)
        if not code.strip():
            continue
        if code.startswith("package "):
            has_package = True
        if "%q" in _strings_of(raw) and "sprintf" in code:
            problems.append(f"{path}:{number}: sprintf with %q is not supported by the embedded engine; use %s")
        if _STRING_BUILTIN_IN_SPRINTF.search(code):
            problems.append(
                f"{path}:{number}: sprintf of a string computed by a builtin is garbled by the embedded engine; "
                "build the text with concat"
            )
        if "time.now_ns" in code:
            problems.append(
                f"{path}:{number}: time.now_ns() makes decisions unreplayable; use input.context.time "
                "(common.now_ns)"
            )
        if re.search(r"\bwith\s+input\s+as\b", code) and "|" in code:
            problems.append(
                f"{path}:{number}: 'with input as' inside a comprehension can crash the embedded engine's "
                "compiler; move the comprehension into a rule and use 'with' on the rule"
            )
        if _is_v0_rule_head(code):
            problems.append(
                f"{path}:{number}: Rego v0 rule body without 'if' (OPA 1.x refuses it, regopy accepts it "
                "silently); write 'name if { … }' or 'name contains x if { … }'"
            )
    if not has_package:
        problems.append(f"{path}:1: no package declaration")
    return problems


def _is_v0_rule_head(code: str) -> bool:
    """A top-level rule whose body opens with ``{`` and has no ``if``: ``allow {``, ``f(x) = y {``."""
    if code[:1].isspace() or not _TOP_LEVEL_NAME.match(code) or code.startswith(_KEYWORD_START):
        return False
    head, brace, _ = code.partition("{")
    if not brace:
        return False
    words = head.split()
    if "if" in words or "contains" in words:
        return False
    assignment = re.search(r"(?::=|=)(?P<value>[^=]*)$", head)
    if assignment is None:
        return True  # "allow {", "deny[msg] {", "f(x) {"
    # "f(x) = y {" is a v0 body after a plain value; "decision := {" or "x := object.union(a, {" are values
    value = assignment.group("value").strip()
    return bool(value) and re.fullmatch(r"[\w.\"]+", value) is not None and code.rstrip().endswith("{")


def _code_of(line: str) -> str:
    """The line without its comment and with string contents blanked out."""
    blanked = _STRING.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], line)
    cut = blanked.find("#")
    return blanked if cut < 0 else blanked[:cut]


def _strings_of(line: str) -> str:
    return " ".join(m.group(0) for m in _STRING.finditer(line))
