"""The governed collection pipeline, assembled: steps, policy, consent, pseudonyms and the audit log.

``Pipeline`` alone is the bare mechanism (parse, validate, quality, store); this module is the one
place that puts the governance around it, so the CLI, the listener and the demo all run the same thing.
"""

from __future__ import annotations

from sqlalchemy import Engine

from governance.audit.decisions import DecisionAuditor
from governance.audit.log import AuditLog
from governance.audit.observer import AuditObserver
from governance.catalog import default_catalog
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.ingest.pipeline import Clock, Pipeline, shared_quality_runner, utc_now
from governance.ingest.steps import ParseStep, QualityStep, Step, ValidateStep
from governance.policy.bundle import PolicyBundle, active_bundle
from governance.policy.collection import CollectionPolicyStep
from governance.policy.engine import make_engine
from governance.policy.point import DecisionPoint
from governance.protect.fieldcrypt import FieldProtector
from governance.protect.keyring import Keyring
from governance.protect.pseudonym import Pseudonyms
from governance.protect.quarantine import QuarantineVault
from governance.protect.step import ProtectStep


def current_bundle(settings: Settings, engine: Engine, *, store: bool = True) -> PolicyBundle:
    """The bundle every stage decides with now: the policies (folder or pinned revision) + the agreements register.

    One revision for collection, storage, use and sharing alike; it changes when the register does.
    """
    from governance.sharing.agreements import AgreementRegistry

    overlay = AgreementRegistry(engine, settings).overlay()
    return active_bundle(settings, store=store, agreements=overlay or None)


def build_pipeline(engine: Engine, settings: Settings, *, clock: Clock = utc_now) -> Pipeline:
    """parse → validate → quality → collection policy → storage policy → store, all audited.

    With ``settings.protection`` off (benchmarks only) the storage step is left out.
    """
    catalog = default_catalog()
    keyring = Keyring.from_settings(settings, engine, clock=clock)
    audit = AuditLog.open(engine, settings.data_dir, keyring=keyring)
    pseudonyms = Pseudonyms(keyring)

    def pseudonymize(value: str, recipient: str) -> str:
        return pseudonyms.of(value) if recipient == "store" else pseudonyms.for_recipient(value, recipient)

    point = DecisionPoint(make_engine(settings, current_bundle(settings, engine)), on_decision=DecisionAuditor(audit))
    steps: list[Step] = [ParseStep(settings.max_payload_bytes), ValidateStep(catalog)]
    if settings.quality_checks:
        steps.append(QualityStep(shared_quality_runner()))
    steps.append(
        CollectionPolicyStep(
            point,
            catalog,
            consent=ConsentRegistry(engine, keyring, clock=clock, issuer=settings.receipt_issuer),
            pseudonymizer=pseudonymize,
            clock=clock,
            cache_seconds=settings.policy_cache_seconds,
        )
    )
    vault = None
    if settings.protection:
        protector = FieldProtector.from_settings(settings, engine, keyring=keyring, clock=clock)
        steps.append(ProtectStep(point, catalog, protector, clock=clock, cache_seconds=settings.policy_cache_seconds))
        vault = QuarantineVault(keyring, catalog, retention_days=settings.quarantine_retention_days,
                                protector=protector)
    return Pipeline(engine, settings, catalog=catalog, steps=steps, clock=clock,
                    observers=[AuditObserver(audit, catalog)], quarantine_vault=vault)
