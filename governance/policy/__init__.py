"""Policies at the four stages: one input shape, one decision shape, one enforcement module.

- :mod:`.model` — ``PolicyInput``, ``Decision``, ``Obligation`` (a union by ``kind``), ``DecisionRecord``
- :mod:`.bundle` — policy bundles, their content-hash revision, the content-addressed store
- :mod:`.engine` — the ``PolicyEngine`` protocol and fail-closed evaluation; :mod:`.embedded` (regopy)
  and :mod:`.opa` (OPA server) implement it
- :mod:`.point` — ``DecisionPoint``: engine + ``on_decision`` recorder (the audit log's hook)
- :mod:`.enforce` — carries out obligations on a batch of records
- :mod:`.collection` — the pipeline's ``policy`` step; :mod:`.service` — use and sharing decisions
- :mod:`.replay` — re-evaluate a recorded decision against its revision; :mod:`.testing` — ``policy test``
"""

from governance.policy.model import Decision, DecisionRecord, Obligation, PolicyInput, Stage

__all__ = ["Decision", "DecisionRecord", "Obligation", "PolicyInput", "Stage"]
