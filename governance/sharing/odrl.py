"""Agreements as ODRL 2.2 policies (JSON-LD, compact form): export, and import of the same shape.

One agreement is one ``Agreement`` policy: ``assigner`` the providing department, ``assignee`` the
recipient, one ``permission`` per dataset (an ODRL rule has one target) with action ``use``, the same
constraints (purpose, period, fields, quota, privacy budget) and one ``duty`` per obligation. The
exact parameters of an obligation travel in ``citygov:obligation``; the duty's ODRL action says what it
is in ODRL terms (``anonymize``, ``aggregate``, ``obtainConsent``, ``delete``). See ``docs/sharing.md``.

Import is strict: it reads this compact shape (no JSON-LD expansion), and anything it does not know —
an unknown constraint, operator or duty, permissions that disagree, a prohibition — is refused, never
skipped: an agreement is not imported with a condition silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from governance.errors import InvalidRequestError
from governance.sharing.agreements import AgreementTerms, instant_text, parse_terms

ODRL_CONTEXT = "http://www.w3.org/ns/odrl.jsonld"
CITYGOV_NS = "urn:citygov:odrl:"
CONTEXT: list[Any] = [
    ODRL_CONTEXT,
    {"citygov": CITYGOV_NS, "dct": "http://purl.org/dc/terms/", "xsd": "http://www.w3.org/2001/XMLSchema#"},
]
PROFILE = "urn:citygov:odrl:profile:v1"
AGREEMENT_PREFIX = "urn:citygov:agreement:"
DATASET_PREFIX = "urn:citygov:dataset:"
PURPOSE_PREFIX = "urn:citygov:purpose:"
PARTY_PREFIX = {"department": "urn:citygov:department:", "external": "urn:citygov:recipient:"}
FIELD_PREFIX = "urn:citygov:field:"

DUTY_ACTION = {
    "drop_fields": "anonymize", "mask": "anonymize", "pseudonymize": "anonymize",
    "generalize_location": "anonymize", "generalize_time": "anonymize", "k_anonymity": "anonymize",
    "noise_budget": "anonymize", "aggregate_only": "aggregate", "require_consent": "obtainConsent",
    "retention": "delete", "encrypt_at_rest": "citygov:encrypt",
}


def _strip(value: Any, prefix: str, what: str) -> str:
    if not isinstance(value, str) or not value.startswith(prefix) or len(value) == len(prefix):
        raise InvalidRequestError(f"ODRL {what} must be an IRI starting with {prefix}")
    return value[len(prefix):]


def to_odrl(terms: AgreementTerms) -> dict[str, Any]:
    """The ODRL ``Agreement`` policy of ``terms``."""
    constraints: list[dict[str, Any]] = [
        {"leftOperand": "purpose", "operator": "isAnyOf",
         "rightOperand": [PURPOSE_PREFIX + p for p in terms.purposes]},
        {"leftOperand": "dateTime", "operator": "gteq",
         "rightOperand": {"@value": instant_text(terms.valid_from), "@type": "xsd:dateTime"}},
        {"leftOperand": "dateTime", "operator": "lt",
         "rightOperand": {"@value": instant_text(terms.valid_until), "@type": "xsd:dateTime"}},
        {"leftOperand": "citygov:field", "operator": "isAnyOf",
         "rightOperand": [FIELD_PREFIX + f for f in terms.fields]},
    ]
    if terms.quota_per_day is not None:
        constraints.append({"leftOperand": "citygov:requestsPerDay", "operator": "lteq",
                            "rightOperand": {"@value": terms.quota_per_day, "@type": "xsd:integer"}})
    if terms.epsilon_budget is not None:
        constraints.append({"leftOperand": "citygov:epsilonBudget", "operator": "lteq",
                            "rightOperand": {"@value": terms.epsilon_budget, "@type": "xsd:decimal"}})
    duties = [{"action": DUTY_ACTION[o.kind], "citygov:obligation": o.model_dump(mode="json")}
              for o in terms.obligations]
    permissions = []
    for dataset in terms.datasets:
        permission: dict[str, Any] = {"target": DATASET_PREFIX + dataset, "action": "use",
                                      "constraint": constraints}
        if duties:
            permission["duty"] = duties
        permissions.append(permission)
    return {
        "@context": CONTEXT,
        "@type": "Agreement",
        "uid": AGREEMENT_PREFIX + terms.id,
        "profile": PROFILE,
        "dct:title": terms.title,
        "assigner": {"@type": "Party", "uid": PARTY_PREFIX["department"] + terms.provider},
        "assignee": {"@type": "Party", "uid": PARTY_PREFIX[terms.recipient_kind] + terms.recipient},
        "citygov:legalBasis": terms.basis,
        "permission": permissions,
    }


_KNOWN_KEYS = {"@context", "@type", "uid", "profile", "dct:title", "assigner", "assignee", "citygov:legalBasis",
               "permission"}


def from_odrl(document: Mapping[str, Any]) -> AgreementTerms:
    """The agreement of an ODRL ``Agreement`` policy in the shape :func:`to_odrl` writes."""
    if not isinstance(document, Mapping):
        raise InvalidRequestError("an ODRL policy is a JSON object")
    unknown = sorted(set(document) - _KNOWN_KEYS)
    if unknown:
        raise InvalidRequestError(f"ODRL policy has terms this profile does not know: {', '.join(unknown)}")
    if document.get("@type") != "Agreement":
        raise InvalidRequestError("only an ODRL policy of @type Agreement is an agreement")
    if document.get("profile") != PROFILE:
        raise InvalidRequestError(f"ODRL policy must declare profile {PROFILE}")
    context = document.get("@context")
    contexts = context if isinstance(context, list) else [context]
    if ODRL_CONTEXT not in contexts:
        raise InvalidRequestError(f"ODRL policy must use the context {ODRL_CONTEXT}")
    agreement_id = _strip(document.get("uid"), AGREEMENT_PREFIX, "uid")
    provider = _party(document.get("assigner"), "assigner", only="department")[1]
    recipient_kind, recipient = _party(document.get("assignee"), "assignee")
    permissions = document.get("permission")
    if not isinstance(permissions, list) or not permissions:
        raise InvalidRequestError("ODRL agreement needs at least one permission")
    datasets: list[str] = []
    shared: tuple[Any, Any] | None = None
    for permission in permissions:
        if not isinstance(permission, Mapping):
            raise InvalidRequestError("an ODRL permission is an object")
        extra = sorted(set(permission) - {"target", "action", "constraint", "duty"})
        if extra:
            raise InvalidRequestError(f"ODRL permission has terms this profile does not know: {', '.join(extra)}")
        if permission.get("action") != "use":
            raise InvalidRequestError("ODRL permission action must be 'use'")
        datasets.append(_strip(permission.get("target"), DATASET_PREFIX, "permission target"))
        rules = (permission.get("constraint"), permission.get("duty", []))
        if shared is None:
            shared = rules
        elif rules != shared:
            raise InvalidRequestError("ODRL permissions of one agreement must share their constraints and duties")
    assert shared is not None
    terms = _constraints(shared[0])
    obligations = _duties(shared[1])
    return parse_terms({
        "id": agreement_id,
        "title": document.get("dct:title"),
        "provider": provider,
        "recipient": recipient,
        "recipient_kind": recipient_kind,
        "datasets": datasets,
        "basis": document.get("citygov:legalBasis"),
        "obligations": obligations,
        **terms,
    })


def _party(value: Any, what: str, only: str | None = None) -> tuple[str, str]:
    uid = value.get("uid") if isinstance(value, Mapping) else value
    if isinstance(value, Mapping) and set(value) - {"@type", "uid"}:
        raise InvalidRequestError(f"ODRL {what} has terms this profile does not know")
    for kind, prefix in PARTY_PREFIX.items():
        if isinstance(uid, str) and uid.startswith(prefix):
            if only is not None and kind != only:
                break
            return kind, _strip(uid, prefix, what)
    allowed = PARTY_PREFIX[only] if only else " or ".join(PARTY_PREFIX.values())
    raise InvalidRequestError(f"ODRL {what} must be a party IRI starting with {allowed}")


def _typed(value: Any, what: str) -> Any:
    if isinstance(value, Mapping):
        if set(value) - {"@value", "@type"}:
            raise InvalidRequestError(f"ODRL {what} has an unknown literal form")
        return value.get("@value")
    return value


def _constraints(constraints: Any) -> dict[str, Any]:
    if not isinstance(constraints, list):
        raise InvalidRequestError("ODRL permission needs a list of constraints")
    out: dict[str, Any] = {}
    seen: set[tuple[str, str]] = set()
    for constraint in constraints:
        if not isinstance(constraint, Mapping) or set(constraint) != {"leftOperand", "operator", "rightOperand"}:
            raise InvalidRequestError("an ODRL constraint is {leftOperand, operator, rightOperand}")
        key = (constraint["leftOperand"], constraint["operator"])
        if key in seen:
            raise InvalidRequestError(f"ODRL constraint {key[0]} {key[1]} is given twice")
        seen.add(key)
        right = constraint["rightOperand"]
        if key == ("purpose", "isAnyOf"):
            out["purposes"] = [_strip(p, PURPOSE_PREFIX, "purpose") for p in _listed(right, "purpose")]
        elif key == ("dateTime", "gteq"):
            out["valid_from"] = _typed(right, "dateTime")
        elif key == ("dateTime", "lt"):
            out["valid_until"] = _typed(right, "dateTime")
        elif key == ("citygov:field", "isAnyOf"):
            out["fields"] = [_strip(f, FIELD_PREFIX, "field") for f in _listed(right, "field")]
        elif key == ("citygov:requestsPerDay", "lteq"):
            out["quota_per_day"] = _typed(right, "requestsPerDay")
        elif key == ("citygov:epsilonBudget", "lteq"):
            out["epsilon_budget"] = _typed(right, "epsilonBudget")
        else:
            raise InvalidRequestError(f"ODRL constraint {key[0]} {key[1]} is not part of this profile")
    missing = sorted({"purposes", "valid_from", "valid_until", "fields"} - set(out))
    if missing:
        raise InvalidRequestError(f"ODRL agreement lacks the constraints for: {', '.join(missing)}")
    return out


def _listed(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(f"ODRL {what} constraint needs a non-empty list")
    return value


def _duties(duties: Any) -> list[dict[str, Any]]:
    if not isinstance(duties, list):
        raise InvalidRequestError("ODRL duties are a list")
    out: list[dict[str, Any]] = []
    for duty in duties:
        if not isinstance(duty, Mapping) or set(duty) != {"action", "citygov:obligation"}:
            raise InvalidRequestError("an ODRL duty is {action, citygov:obligation}")
        obligation = duty["citygov:obligation"]
        kind = obligation.get("kind") if isinstance(obligation, Mapping) else None
        if kind not in DUTY_ACTION:
            raise InvalidRequestError(f"ODRL duty names an unknown obligation {kind!r}")
        if duty["action"] != DUTY_ACTION[kind]:
            raise InvalidRequestError(f"ODRL duty for {kind} must have action {DUTY_ACTION[kind]}")
        out.append(dict(obligation))
    return out
