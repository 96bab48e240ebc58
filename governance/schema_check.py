"""Our own code generator for the verdict-only schema check on the per-record hot path.

:func:`generate_check` turns one draft-07 JSON Schema into Python source, compiled once at load time,
that accepts exactly the values ``fastjsonschema.compile(schema, formats=...)`` accepts but only says
*whether* a value is valid (the detailed fastjsonschema validator stays the source of error messages).

Where fastjsonschema's code tests every one of a model's ~50 properties for presence, the generated
code walks **the entity's own keys**: ``required`` is one ``in`` per required name, and each key present
is looked up in a table of its property's check — the few checks most properties share (a string, a
non-negative number, an identifier, a date-time) written inline in the loop, the others small
functions; an unknown key is a ``KeyError`` (free ``try`` in Python 3.11) under
``additionalProperties: false``. Small objects (a GeoJSON geometry) are checked by one lookup per
property instead. Simple keywords become inline boolean expressions (a keyword that does not apply to
the value's kind is left out when ``type``, here or in an enclosing schema, rules that kind out, and
its kind guard is dropped when ``type`` guarantees it); ``anyOf``/``oneOf``/``not``/``if`` are plain
expressions, no ``try``/``except`` on valid data; a ``oneOf``/``anyOf`` of objects told apart by a
required property (GeoJSON ``type``) jumps to the one branch that can match. Strings that passed a
``pattern`` or a regular-expression ``format`` (``uri``) are remembered (up to :data:`REMEMBERED` per
keyword), since identifiers repeat from record to record (not those of custom formats: date-times do not).

Semantics follow fastjsonschema's draft-07 code keyword by keyword (so the verdict is the same), in
particular: ``true``/``false`` are never numbers; a float without fractional part is an ``integer``;
a NaN passes every ``minimum``/``maximum``; ``array`` also takes tuples; enum/const values compare
like JSON (``1 == 1.0`` but ``True != 1``); ``pattern`` searches with ``$`` meaning end of string.
Keywords are not tested in fastjsonschema's order (cheap ones first, properties in the entity's key
order): the same verdict on every JSON value, but a value on which fastjsonschema's own code raises
something else than a validation error (a ``Decimal('NaN')`` compared with a ``minimum``, say — never
parsed JSON) may raise here too, or be refused, where fastjsonschema would have refused it, or raised.

The generator supports exactly the keywords listed in :data:`SUPPORTED`; anything else (an unknown or
unsupported keyword, a ``$ref`` that is not a local JSON pointer, a recursive ``$ref``, an unknown
``format``, a ``default`` — fastjsonschema fills defaults in, which changes the data) makes it refuse
with :class:`UnsupportedSchemaError`, so the caller falls back to fastjsonschema's own code: never a silent accept.
"""

from __future__ import annotations

import decimal
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from fastjsonschema.draft04 import DOLLAR_FINDER
from fastjsonschema.draft07 import CodeGeneratorDraft07

DRAFT_07 = "http://json-schema.org/draft-07/schema#"

#: Keywords that never change a verdict (annotations), plus ``definitions`` (reached only by ``$ref``).
ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "readOnly", "writeOnly", "definitions"})

#: Validation keywords the generator implements.
SUPPORTED = frozenset({
    "$ref", "type", "enum", "const",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "format",
    "items", "additionalItems", "minItems", "maxItems", "uniqueItems",
    "properties", "required", "additionalProperties", "dependencies",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
})

#: The Python kind of a value each JSON type accepts (``num`` never holds a bool).
_KINDS = {"string": "str", "number": "num", "integer": "num", "array": "arr", "object": "obj",
          "boolean": "bool", "null": "null"}

#: The guard making a keyword apply only to values of its kind (as fastjsonschema writes it).
_GUARDS = {
    "str": "isinstance({v}, str)",
    "num": "(isinstance({v}, (int, float, Decimal)) and not isinstance({v}, bool))",
    "arr": "isinstance({v}, (list, tuple))",
    "obj": "isinstance({v}, dict)",
}

#: Small object schemas (``additionalProperties`` absent or false) check their properties by lookup.
_LOOKUP_LIMIT = 6

#: How many of the checks an object's properties share are written inline in the loop over its keys.
_INLINE = 4


class UnsupportedSchemaError(Exception):
    """The schema uses something the generator does not implement: use fastjsonschema's code instead."""


def generate_check(document: Mapping[str, Any], formats: Mapping[str, Callable[[str], bool]], *,
                   remember: bool = True) -> Callable[[Any], Any]:
    """Compile the verdict-only check of ``document``: it returns the value when valid and raises
    ``fastjsonschema.JsonSchemaValueException`` (no details) when not.

    ``remember=False``: no string that passed a ``pattern`` or format is kept — for the schemas of
    entities about a person, whose identifiers must not linger in the process after their records.
    Raises :class:`UnsupportedSchemaError` for schemas outside what the generator implements.
    """
    source, namespace = generate_source(document, formats, remember=remember)
    code = compile(source, f"<schema check {document.get('title', '?')}>", "exec")
    exec(code, namespace)  # noqa: S102  (our own generated code, like fastjsonschema's compile)
    check: Callable[[Any], Any] = namespace["check"]
    return check


def generate_source(
    document: Mapping[str, Any], formats: Mapping[str, Callable[[str], bool]], *, remember: bool = True
) -> tuple[str, dict[str, Any]]:
    """The Python source of the check (defining ``check``) and the globals it runs with."""
    if not isinstance(document, Mapping) or document.get("$schema") != DRAFT_07:
        raise UnsupportedSchemaError("only draft-07 schemas")
    generator = _Generator(document, formats, remember=remember)
    try:
        return generator.source(), generator.namespace
    except RecursionError:
        raise UnsupportedSchemaError("schema nested too deeply") from None


# --------------------------------------------------------------------------------------------------
# Run-time helpers referenced by the generated code
# --------------------------------------------------------------------------------------------------


def _json_equal(value: Any, expected: Any) -> bool:
    """fastjsonschema's ``enum``/``const`` match: JSON equality, where a bool is not a number."""
    if isinstance(expected, bool):
        return isinstance(value, bool) and value is expected
    if isinstance(expected, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == expected
    if expected is None:
        return value is None
    if isinstance(expected, str):
        return isinstance(value, str) and value == expected
    if isinstance(expected, dict):
        if not isinstance(value, dict) or len(value) != len(expected):
            return False
        return all(key in value and _json_equal(value[key], item) for key, item in expected.items())
    if isinstance(expected, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(expected):
            return False
        return all(_json_equal(v, e) for v, e in zip(value, expected, strict=True))
    return bool(value == expected)


def _hashable(value: Any) -> Any:
    # exactly fastjsonschema's ``fn`` for uniqueItems
    if hasattr(value, "items"):
        return frozenset({k: _hashable(v) for k, v in value.items()}.items())
    if isinstance(value, (dict, list)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, bool):
        return (bool, value)
    return value


def _plain_json(value: Any) -> bool:
    """Whether ``value`` is plain JSON data: no NaN or infinity (fastjsonschema writes them as bare names)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    return value is None or isinstance(value, (str, int))


def _unique(value: Any) -> bool:
    return len(value) <= len({_hashable(item) for item in value})


# --------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------


class _Generator:
    def __init__(self, root: Mapping[str, Any], formats: Mapping[str, Callable[[str], bool]], *,
                 remember: bool = True) -> None:
        self._root = root
        self._formats = formats
        self._remember = remember
        self._lines: list[str] = []
        self.namespace: dict[str, Any] = {"Decimal": decimal.Decimal, "_unique": _unique, "_json_equal": _json_equal}
        self._constants: dict[tuple[str, str], str] = {}
        self._functions: dict[tuple[int, frozenset[str] | None], str] = {}
        self._tested: dict[str, str] = {}
        self._arrays: dict[str, str] = {}
        self._refs: list[int] = []  # the schemas being expanded through a $ref (by id)
        self._count = 0

    # ---- output ------------------------------------------------------------------------------------

    def source(self) -> str:
        from fastjsonschema import JsonSchemaValueException

        self.namespace["JsonSchemaValueException"] = JsonSchemaValueException
        body = self._statements(self._root, "data", "raise JsonSchemaValueException('invalid')", "    ")
        main = ["def check(data):", *body, "    return data"]
        return "\n".join([*self._lines, *main, ""])

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"_{prefix}{self._count}"

    def _constant(self, kind: str, value: Any, key: str) -> str:
        """A global of the generated code holding ``value`` (shared when ``key`` repeats)."""
        found = self._constants.get((kind, key))
        if found is None:
            found = self._constants[(kind, key)] = self._name(kind)
            self.namespace[found] = value
        return found

    def _function(self, schema: Any, known: frozenset[str] | None) -> str:
        """The name of a generated function ``(v) -> bool`` true when ``v`` (known to be of one of the
        kinds ``known``) is valid under ``schema``."""
        found = self._functions.get((id(schema), known))
        if found is not None:
            return found
        body = "\n".join(self._statements(schema, "v", "return False", "    ", known))
        name = self._tested.get(body)
        if name is None:
            name = self._tested[body] = self._name("f")
            self._lines.extend([f"def {name}(v):", body, "    return True", ""])
        self._functions[(id(schema), known)] = name
        return name

    # ---- schemas -----------------------------------------------------------------------------------

    def _resolve(self, schema: Any) -> tuple[Any, int | None]:
        """The schema a ``$ref`` points at (siblings of ``$ref`` are ignored, as in draft-07)."""
        if not isinstance(schema, Mapping) or "$ref" not in schema:
            return schema, None
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise UnsupportedSchemaError(f"$ref {ref!r}: only local JSON pointers")
        target: Any = self._root
        fragment = ref[1:].lstrip("/")
        for part in unquote(fragment).split("/") if fragment else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, Mapping) and part in target:
                target = target[part]
            else:
                raise UnsupportedSchemaError(f"$ref {ref!r} does not resolve")
        if id(target) in self._refs:
            raise UnsupportedSchemaError(f"$ref {ref!r} is recursive")
        return target, id(target)

    def _keywords(self, schema: Mapping[str, Any], is_root: bool) -> None:
        for key in schema:
            if key in SUPPORTED or key in ANNOTATIONS or key.startswith("x-"):
                continue
            if key == "$schema" and is_root:
                continue
            raise UnsupportedSchemaError(f"keyword {key!r}")

    def _statements(
        self, schema: Any, var: str, fail: str, indent: str, known: frozenset[str] | None = None
    ) -> list[str]:
        """Statements running ``fail`` when ``var`` (of a kind in ``known``) is invalid under ``schema``."""
        schema, ref = self._resolve(schema)
        if ref is not None:
            self._refs.append(ref)
            try:
                return self._statements(schema, var, fail, indent, known)
            finally:
                self._refs.pop()
        if schema is True:
            return []
        if schema is False:
            return [f"{indent}{fail}"]
        if not isinstance(schema, Mapping):
            raise UnsupportedSchemaError("a schema must be an object or a boolean")
        self._keywords(schema, is_root=schema is self._root)
        kinds = self._kinds(schema, known)
        lines = [f"{indent}if not ({test}): {fail}" for test in self._tests(schema, var, kinds, known)]
        lines.extend(self._object_loop(schema, var, kinds, fail, indent))
        return lines

    def _expression(self, schema: Any, var: str, known: frozenset[str] | None = None) -> str:
        """A boolean expression true when ``var`` (of a kind in ``known``) is valid under ``schema``."""
        schema, ref = self._resolve(schema)
        if ref is not None:
            self._refs.append(ref)
            try:
                return self._expression(schema, var, known)
            finally:
                self._refs.pop()
        if schema is True:
            return "True"
        if schema is False:
            return "False"
        if not isinstance(schema, Mapping):
            raise UnsupportedSchemaError("a schema must be an object or a boolean")
        self._keywords(schema, is_root=schema is self._root)
        kinds = self._kinds(schema, known)
        if self._loops(schema, kinds):
            return f"{self._function(schema, known)}({var})"
        tests = self._tests(schema, var, kinds, known)
        return " and ".join(f"({t})" for t in tests) if tests else "True"

    def _kinds(self, schema: Mapping[str, Any], known: frozenset[str] | None) -> frozenset[str] | None:
        """The kinds of value ``type`` allows among those ``known`` (``None``: every kind)."""
        if "type" not in schema:
            return known
        declared = schema["type"]
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list) or not names or not all(n in _KINDS for n in names):
            raise UnsupportedSchemaError(f"type {declared!r}")
        kinds = frozenset(_KINDS[n] for n in names)
        return kinds if known is None else kinds & known

    def _loops(self, schema: Mapping[str, Any], kinds: frozenset[str] | None) -> bool:
        """Whether the object checks of ``schema`` need a loop over the keys (so a function)."""
        return self._object_applies(schema, kinds) and self._by_loop(schema)

    @staticmethod
    def _object_applies(schema: Mapping[str, Any], kinds: frozenset[str] | None) -> bool:
        has = "properties" in schema or "additionalProperties" in schema
        return has and (kinds is None or "obj" in kinds)

    @staticmethod
    def _by_loop(schema: Mapping[str, Any]) -> bool:
        """Many properties, or a schema for the others: a loop over the object's keys. Else a lookup per
        property (and, under ``additionalProperties: false``, one subset test of the keys)."""
        extra = schema.get("additionalProperties", True)
        properties = schema.get("properties", {})
        return not (extra is True or extra is False or extra == {}) or len(properties) > _LOOKUP_LIMIT

    # ---- keywords ----------------------------------------------------------------------------------

    def _guarded(self, test: str, kind: str, var: str, kinds: frozenset[str] | None) -> str | None:
        """``test`` for values of ``kind`` only; ``None`` when ``type`` rules that kind out."""
        if kinds is not None and kind not in kinds:
            return None
        if kinds is not None and kinds == frozenset({kind}):
            return test
        return f"not {_GUARDS[kind].format(v=var)} or ({test})"

    def _tests(
        self, schema: Mapping[str, Any], var: str, kinds: frozenset[str] | None, known: frozenset[str] | None
    ) -> list[str]:
        """Expressions (over ``var``), all true when ``var`` is valid, for every keyword but the loops.

        ``var`` is known to be of one of the kinds ``known`` (an enclosing schema tested its type), and of
        one of ``kinds`` once ``type`` (tested first) holds.
        """
        v = var
        tests: list[str | None] = []
        if "type" in schema and not self._implied(schema["type"], known):
            tests.append(self._type(schema["type"], v))
        if "enum" in schema:
            tests.append(self._enum(schema["enum"], v, kinds))
        if "const" in schema:
            tests.append(self._enum([schema["const"]], v, kinds))
        for key, op in (("minimum", "<"), ("maximum", ">"), ("exclusiveMinimum", "<="), ("exclusiveMaximum", ">=")):
            if key in schema:
                limit = schema[key]
                if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not math.isfinite(limit):
                    raise UnsupportedSchemaError(f"{key} {limit!r}")
                tests.append(self._guarded(f"not {v} {op} {limit!r}", "num", v, kinds))
        for key, op in (("minLength", "<"), ("maxLength", ">")):
            if key in schema:
                tests.append(self._guarded(f"not len({v}) {op} {self._count_limit(schema, key)}", "str", v, kinds))
        if "pattern" in schema:
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise UnsupportedSchemaError("pattern must be a string")
            regex = re.compile(DOLLAR_FINDER.sub(r"\\Z", pattern))
            tests.append(self._guarded(self._remembered(f"pattern {pattern}", regex.search, v), "str", v, kinds))
        if "format" in schema:
            tests.append(self._format(schema["format"], v, kinds))
        for key, op in (("minItems", "<"), ("maxItems", ">")):
            if key in schema:
                tests.append(self._guarded(f"not len({v}) {op} {self._count_limit(schema, key)}", "arr", v, kinds))
        if schema.get("uniqueItems") is True:
            tests.append(self._guarded(f"_unique({v})", "arr", v, kinds))
        elif schema.get("uniqueItems", False) is not False:
            raise UnsupportedSchemaError("uniqueItems must be a boolean")
        if "items" in schema:
            tests.append(self._items(schema, v, kinds))
        if "required" in schema:
            required = schema["required"]
            if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
                raise UnsupportedSchemaError("required must be a list of names")
            if required:
                present = " and ".join(f"{n!r} in {v}" for n in required)
                tests.append(self._guarded(present, "obj", v, kinds))
        if "dependencies" in schema:
            tests.append(self._dependencies(schema["dependencies"], v, kinds))
        if self._object_applies(schema, kinds) and not self._by_loop(schema):
            tests.append(self._lookups(schema, v, kinds))
        for key in ("allOf", "anyOf", "oneOf"):
            if key in schema:
                branches = schema[key]
                if not isinstance(branches, list) or not branches:
                    raise UnsupportedSchemaError(f"{key} must be a non-empty list")
                test = self._dispatch(branches, v, kinds) if key != "allOf" else None
                if test is None and key == "oneOf" and not exclusive(branches):
                    test = f"{self._exactly_one(branches, kinds)}({v})"
                if test is None:
                    joiner = " and " if key == "allOf" else " or "
                    test = joiner.join(f"({self._expression(b, v, kinds)})" for b in branches)
                tests.append(test)
        if "not" in schema:
            tests.append(f"not ({self._expression(schema['not'], v, kinds)})")
        if "if" in schema:
            condition = self._expression(schema["if"], v, kinds)
            then = self._expression(schema["then"], v, kinds) if "then" in schema else "True"
            otherwise = self._expression(schema["else"], v, kinds) if "else" in schema else "True"
            if then != "True" or otherwise != "True":
                tests.append(f"({then}) if ({condition}) else ({otherwise})")
        return [t for t in tests if t is not None and t != "True"]

    def _remembered(self, key: str, test: Callable[[str], Any], v: str) -> str:
        """An expression (over a string ``v``) true when ``test(v)`` is; strings that passed are remembered.

        Identifiers repeat from record to record (one device, many records); a set lookup is much
        cheaper than a regular expression. Not with ``remember=False``: then ``test`` runs every time.
        """
        if not self._remember:
            plain = self._constant("test", _verdict(test), key)
            return f"{plain}({v})"
        found = self._constants.get(("passed", key))
        if found is None:
            found = self._constant("passed", set(), key)
            self.namespace[f"{found}_test"] = _remember(test, self.namespace[found])
        return f"({v} in {found} or {found}_test({v}))"

    @staticmethod
    def _implied(declared: Any, known: frozenset[str] | None) -> bool:
        """Whether ``type`` holds for every value of the kinds ``known`` (an enclosing schema's type)."""
        names = [declared] if isinstance(declared, str) else declared
        if known is None or not isinstance(names, list):
            return False
        if "integer" in names and "number" not in names:
            return False  # "num" may hold fractions
        return known <= {_KINDS[n] for n in names if n in _KINDS}

    @staticmethod
    def _count_limit(schema: Mapping[str, Any], key: str) -> str:
        limit = schema[key]
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise UnsupportedSchemaError(f"{key} {limit!r}")
        return repr(limit)

    @staticmethod
    def _type(declared: Any, v: str) -> str:
        names = [declared] if isinstance(declared, str) else list(declared)
        simple = {
            "string": f"isinstance({v}, str)",
            "object": f"isinstance({v}, dict)",
            "array": f"isinstance({v}, (list, tuple))",
            "boolean": f"isinstance({v}, bool)",
            "null": f"{v} is None",
            # exact floats and ints first: most numbers, and cheaper than two isinstance calls
            "number": (
                f"({v}.__class__ is float or {v}.__class__ is int"
                f" or (isinstance({v}, (int, float, Decimal)) and not isinstance({v}, bool)))"
            ),
            "integer": (f"(isinstance({v}, int) or (isinstance({v}, float) and {v}.is_integer()))"
                        f" and not isinstance({v}, bool)"),
        }
        if len(names) == 1:
            return simple[names[0]]
        # fastjsonschema's own formula for a list of types
        python = {"null": "NoneType", "boolean": "bool", "number": "int, float, Decimal", "integer": "int",
                  "string": "str", "array": "list, tuple", "object": "dict"}
        types = ", ".join(python[n] for n in names).replace("NoneType", "type(None)")
        failing = f"not isinstance({v}, ({types},))"
        if "integer" in names:
            failing += f" and not (isinstance({v}, float) and {v}.is_integer())"
        if ("number" in names or "integer" in names) and "boolean" not in names:
            failing += f" or isinstance({v}, bool)"
        return f"not ({failing})"

    def _enum(self, values: Any, v: str, kinds: frozenset[str] | None) -> str:
        if not isinstance(values, list):
            raise UnsupportedSchemaError("enum must be a list")
        if not _plain_json(values):
            raise UnsupportedSchemaError("enum/const values must be JSON (finite numbers)")
        if not values:
            return "False"
        if all(isinstance(value, str) for value in values):
            allowed = self._constant("k", frozenset(values), repr(sorted(set(values))))
            if kinds == frozenset({"str"}):
                return f"{v} in {allowed}"
            return f"isinstance({v}, str) and {v} in {allowed}"
        options = self._constant("e", list(values), repr(values))
        return f"any(_json_equal({v}, _o) for _o in {options})"

    def _format(self, name: Any, v: str, kinds: frozenset[str] | None) -> str | None:
        if isinstance(name, str) and name in self._formats:
            # not remembered: the values of our one custom format, date-time, are new record after record
            function = self._constant("fmt", self._formats[name], name)
            return self._guarded(f"{function}({v})", "str", v, kinds)
        regexes: Mapping[str, str] = CodeGeneratorDraft07.FORMAT_REGEXS
        if isinstance(name, str) and name in regexes:
            test = re.compile(regexes[name]).match
            return self._guarded(self._remembered(f"format {name}", test, v), "str", v, kinds)
        raise UnsupportedSchemaError(f"format {name!r}")

    def _items(self, schema: Mapping[str, Any], v: str, kinds: frozenset[str] | None) -> str | None:
        items = schema["items"]
        if items is True or items == {}:
            return None
        if items is False:
            return self._guarded(f"not {v}", "arr", v, kinds)
        if isinstance(items, list):
            # minItems (tested before, unguarded when kinds guarantee an array) says which items exist
            least = schema.get("minItems", 0) if kinds == frozenset({"arr"}) else 0
            tests = []
            for i, item in enumerate(items):
                test = self._expression(item, f"{v}[{i}]")
                if test != "True":
                    tests.append(f"({test})" if i < least else f"(len({v}) <= {i} or ({test}))")
            extra = schema.get("additionalItems", True)
            if extra is False:
                tests.append(f"len({v}) <= {len(items)}")
            elif not (extra is True or extra == {}):
                tests.append(f"(len({v}) <= {len(items)} or {self._each(extra)}({v}[{len(items)}:]))")
            return self._guarded(" and ".join(tests) or "True", "arr", v, kinds)
        return self._guarded(f"{self._each(items)}({v})", "arr", v, kinds)

    def _each(self, items: Any) -> str:
        """A function true when every item of a sequence is valid under ``items``."""
        test = self._expression(items, "x")
        name = self._arrays.get(test)
        if name is None:
            name = self._arrays[test] = self._name("a")
            self._lines.extend([f"def {name}(v):", "    for x in v:", f"        if not ({test}): return False",
                                "    return True", ""])
        return name

    def _dependencies(self, dependencies: Any, v: str, kinds: frozenset[str] | None) -> str | None:
        if not isinstance(dependencies, Mapping):
            raise UnsupportedSchemaError("dependencies must be an object")
        tests = []
        for key, needed in dependencies.items():
            if needed is True or needed == []:
                continue
            if needed is False:
                tests.append(f"{key!r} not in {v}")
            elif isinstance(needed, list) and all(isinstance(n, str) for n in needed):
                present = " and ".join(f"{n!r} in {v}" for n in needed)
                tests.append(f"({key!r} not in {v} or ({present}))")
            else:
                known = frozenset({"obj"})
                tests.append(f"({key!r} not in {v} or ({self._expression(needed, v, known)}))")
        return self._guarded(" and ".join(tests), "obj", v, kinds) if tests else None

    def _properties(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        properties = schema.get("properties", {})
        if not isinstance(properties, Mapping) or not all(isinstance(n, str) for n in properties):
            raise UnsupportedSchemaError("properties must be an object")
        if "patternProperties" in schema:
            raise UnsupportedSchemaError("patternProperties")
        return properties

    def _lookups(self, schema: Mapping[str, Any], v: str, kinds: frozenset[str] | None) -> str | None:
        """Few properties: one lookup per property (after a subset test when there may be no others)."""
        tests = []
        properties = self._properties(schema)
        if schema.get("additionalProperties", True) is False:
            names = self._constant("n", frozenset(properties), repr(sorted(properties)))
            tests.append(f"{v}.keys() <= {names}")
        required = schema.get("required", [])
        for name, prop in properties.items():
            test = self._expression(prop, "_V_")
            if test.count("_V_") > 2:  # a call rather than many lookups
                test = f"{self._function_of(test.replace('_V_', 'x'))}({v}[{name!r}])"
            else:
                test = test.replace("_V_", f"{v}[{name!r}]")
            if test != "True":
                # a required name is known to be there when kinds guarantee an object (tested earlier)
                present = name in required and kinds == frozenset({"obj"})
                tests.append(f"({test})" if present else f"({name!r} not in {v} or ({test}))")
        return self._guarded(" and ".join(tests), "obj", v, kinds) if tests else None

    def _function_of(self, test: str) -> str:
        """A function ``(x) -> bool`` returning ``test`` (an expression over ``x``)."""
        if test.startswith("_f") and test.endswith("(x)") and test[2:-3].isdigit():
            return test[:-3]
        found = self._tested.get(test)
        if found is not None:
            return found
        name = self._tested[test] = self._name("p")
        self._lines.extend([f"def {name}(x):", f"    return {test}", ""])
        return name

    def _object_loop(
        self, schema: Mapping[str, Any], v: str, kinds: frozenset[str] | None, fail: str, indent: str
    ) -> list[str]:
        """The loop over an object's own keys: each present property checked by its function."""
        if not (self._object_applies(schema, kinds) and self._by_loop(schema)):
            return []
        extra = schema.get("additionalProperties", True)
        properties = self._properties(schema)
        tests = {name: self._expression(prop, "w") for name, prop in properties.items()}
        # the checks most properties share are written inline, behind a marker; the others are calls
        shared = Counter(t for t in tests.values() if t != "True")
        markers = {test: self._constant("m", _Marker(), test) for test, _ in shared.most_common(_INLINE)}
        entries = {}
        for name, prop in properties.items():
            test = tests[name]
            if test in markers:
                entries[name] = markers[test]
            elif test == "True":
                self.namespace["_anything"] = _anything
                entries[name] = "_anything"
            else:
                entries[name] = self._function_of(self._expression(prop, "x"))
        table = self._name("props")
        self._lines.extend([f"{table} = {{{', '.join(f'{n!r}: {e}' for n, e in entries.items())}}}", ""])
        lines = []
        if kinds != frozenset({"obj"}):
            lines.append(f"{indent}if isinstance({v}, dict):")
            indent += "    "
        closed = extra is False
        if closed:
            lines.append(f"{indent}try:")
            indent += "    "
        inner = indent + "    "
        lines.append(f"{indent}for k, w in {v}.items():")
        if closed:
            lines.append(f"{inner}c = {table}[k]")  # KeyError: not a property
            chain = "if"
        else:
            lines.append(f"{inner}c = {table}.get(k)")
            lines.append(f"{inner}if c is None:")
            if extra is True or extra == {}:
                lines.append(f"{inner}    pass")
            else:
                lines.append(f"{inner}    if not ({self._expression(extra, 'w')}): {fail}")
            chain = "elif"
        for test, marker in markers.items():
            lines.append(f"{inner}{chain} c is {marker}:")
            lines.append(f"{inner}    if not ({test}): {fail}")
            chain = "elif"
        lines.append(f"{inner}{chain} not c(w): {fail}")
        if closed:
            names = self._constant("n", frozenset(properties), repr(sorted(properties)))
            indent = indent[:-4]
            lines.append(f"{indent}except KeyError:")
            lines.append(f"{indent}    if {v}.keys() <= {names}: raise  # not ours")
            lines.append(f"{indent}    {fail}")
        return lines

    def _dispatch(self, branches: list[Any], v: str, kinds: frozenset[str] | None) -> str | None:
        """``anyOf``/``oneOf`` of object branches told apart by one required property (a GeoJSON
        geometry by its ``type``): its value picks the only branch that can match, if any."""
        resolved = [self._resolve(branch)[0] for branch in branches]
        if not all(isinstance(b, dict) and "$ref" not in b and b.get("type") == "object" for b in resolved):
            return None
        common = set.intersection(*(set(_strings(b.get("required"))) for b in resolved))
        for name in sorted(common):
            values = [_string_values(b, name) for b in resolved]
            if any(found is None for found in values):
                continue
            if sum(len(found or ()) for found in values) != len(set().union(*(found or () for found in values))):
                continue  # some value would pick two branches
            obj = frozenset({"obj"})
            table = {value: self._function(branch, obj)
                     for branch, found in zip(branches, values, strict=True) for value in found or ()}
            self.namespace["_never"] = _never
            entries = ", ".join(f"{value!r}: {function}" for value, function in sorted(table.items()))
            if ("d", entries) not in self._constants:
                self._lines.extend([f"{self._constant('d', {}, entries)}.update({{{entries}}})", ""])
            choice = self._constant("d", {}, entries)
            test = f"isinstance({v}.get({name!r}), str) and {choice}.get({v}[{name!r}], _never)({v})"
            return test if kinds == obj else f"isinstance({v}, dict) and {test}"
        return None

    def _exactly_one(self, branches: list[Any], known: frozenset[str] | None) -> str:
        """A function true when exactly one of ``branches`` matches; like fastjsonschema, it stops
        trying branches once two matched."""
        tests = [self._expression(branch, "v", known) for branch in branches]
        body = [f"    if n < 2 and ({test}): n += 1" for test in tests]
        name = self._name("one")
        self._lines.extend([f"def {name}(v):", "    n = 0", *body, "    return n == 1", ""])
        return name


class _Marker:
    """Stands, in a property table, for a check written inline in the loop."""


#: How many strings one regular expression or format remembers before it starts afresh.
REMEMBERED = 4096


def _remember(test: Callable[[str], Any], passed: set[str]) -> Callable[[str], bool]:
    """``test`` (of a pattern or format), remembering in ``passed`` the exact strings that pass it."""

    def remembering(value: str) -> bool:
        if not test(value):
            return False
        if value.__class__ is str:  # a subclass could compare differently
            if len(passed) >= REMEMBERED:
                passed.clear()
            passed.add(value)
        return True

    return remembering


def _verdict(test: Callable[[str], Any]) -> Callable[[str], bool]:
    """``test`` (of a pattern or format) as a plain ``True``/``False``, remembering nothing."""

    def verdict(value: str) -> bool:
        return bool(test(value))

    return verdict


def _anything(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


# --------------------------------------------------------------------------------------------------
# Mutually exclusive oneOf branches
# --------------------------------------------------------------------------------------------------


def exclusive(branches: list[Any]) -> bool:
    """True when no value can match two of ``branches`` (so "exactly one" means "at least one").

    Proven pairwise, conservatively, from two facts only: the branches declare disjoint ``type``
    sets (``integer`` counting as a ``number``), or both are objects requiring a property whose
    ``const``/``enum`` string values do not overlap. Anything else counts as possibly overlapping
    (number ranges too: a NaN lies in every range, so "exactly one" would refuse it where
    "at least one" would not).
    """
    return all(
        _disjoint(a, b) for i, a in enumerate(branches) for b in branches[i + 1 :]
    )


def _disjoint(a: Any, b: Any) -> bool:
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    types_a, types_b = _types(a), _types(b)
    if types_a is not None and types_b is not None and not types_a & types_b:
        return True
    if types_a != {"object"} or types_b != {"object"}:
        return False
    required = set(_strings(a.get("required"))) & set(_strings(b.get("required")))
    for name in required:
        values_a = _string_values(a, name)
        values_b = _string_values(b, name)
        if values_a is not None and values_b is not None and not values_a & values_b:
            return True
    return False


def _types(schema: dict[str, Any]) -> set[str] | None:
    if "$ref" in schema:
        return None
    declared = schema.get("type")
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    found = set(names)
    if "integer" in found:
        found.add("number")
    if "number" in found:
        found.add("integer")
    return found


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _string_values(schema: dict[str, Any], name: str) -> set[str] | None:
    """The only values property ``name`` may take under ``schema``, when they are all strings."""
    properties = schema.get("properties")
    prop = properties.get(name) if isinstance(properties, dict) else None
    if not isinstance(prop, dict) or "$ref" in prop:
        return None
    if "const" in prop:
        return {prop["const"]} if isinstance(prop["const"], str) else None
    values = prop.get("enum")
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        return set(values)
    return None
