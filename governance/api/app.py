"""The signed data API: FastAPI on the embedded defaults (SQLite, in-process policy engine).

Endpoints (see docs/api.md):

- ``POST /v1/data/query`` — a signed query; the answer (or the refusal) is signed and audited.
- ``/v1/audit/...`` — the audit log router, for callers registered with the ``auditor`` role.
- ``GET /.well-known/jwks.json`` — the keys that sign responses.
- ``GET /healthz`` (alive), ``GET /readyz`` (database reachable, policy engine loaded), ``GET /metrics``.

``create_app(settings)`` builds everything once per process (uvicorn workers each call
:func:`app_from_env`); the query layer comes in as a :class:`QueryBackend` — by default
``governance.sharing.query.QueryService`` over the same engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from governance import __version__
from governance.api.auth import Authenticator, Caller, SignedRequestError, request_url
from governance.api.departments import DepartmentRegistry
from governance.api.errors import ErrorReply, error_reply
from governance.api.events import RequestFacts, auth_failed_event, rejection_event, request_event
from governance.api.metrics import CONTENT_TYPE, Metrics
from governance.api.middleware import ApiMiddleware
from governance.api.replay import ReplayStore
from governance.api.signing import ResponseSigner
from governance.api.tables import ensure_tables
from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.audit.observer import ConsentAuditor
from governance.audit.router import audit_router
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.consent.router import consent_router
from governance.errors import AccessDeniedError, CitygovError
from governance.policy.model import Actor
from governance.policy.service import stage_for
from governance.protect.keyring import Keyring
from governance.retention import run_periodically
from governance.store.db import create_db_engine, init_schema

log = logging.getLogger("citygov.api")
Clock = Callable[[], datetime]
AUDITOR_ROLE = "auditor"
PRIVACY_OFFICER_ROLE = "privacy-officer"
JSON = "application/json"


def utc_now() -> datetime:
    return datetime.now(UTC)


class QueryResultLike(Protocol):
    records: list[dict[str, Any]]
    next_cursor: str | None
    stage: str
    decision_id: str
    policy_revision: str
    fields: list[str]
    obligations: list[str]
    suppressed: int
    epsilon_spent: float | None


class QueryRunner(Protocol):
    def run(self, requester: Any, request: Any, /) -> Any: ...


@dataclass(frozen=True)
class QueryBackend:
    """The query layer as the API uses it: the service, its request model, and how a caller becomes a Requester."""

    service: QueryRunner
    request_model: type[BaseModel]
    make_requester: Callable[[Caller], Any]
    policy_revision: Callable[[], str | None]


def sharing_backend(settings: Settings, engine: Engine, *, clock: Clock = utc_now) -> QueryBackend:
    """The real query layer (``governance.sharing.query``)."""
    from governance.sharing.query import QueryRequest, QueryService, Requester

    service = QueryService.from_settings(settings, engine, clock=clock)

    def revision() -> str | None:
        """The revision of the loaded policy bundle (loading it when needed): the readiness check."""
        policy: Any = getattr(service, "policy", None)
        point: Any = policy.point() if policy is not None and hasattr(policy, "point") else getattr(
            service, "point", None)
        return None if point is None else str(point.revision)

    return QueryBackend(
        service=service, request_model=QueryRequest,
        make_requester=lambda caller: Requester(id=caller.name, kind=caller.kind, roles=caller.roles),
        policy_revision=revision,
    )


@dataclass
class ApiState:
    """Everything a request needs, built once per process."""

    settings: Settings
    engine: Engine
    audit: AuditLog
    signer: ResponseSigner
    registry: DepartmentRegistry
    replay: ReplayStore
    authenticator: Authenticator
    backend: QueryBackend
    metrics: Metrics
    clock: Clock
    owns_engine: bool

    async def record(self, event: AuditEvent) -> None:
        await run_in_threadpool(self.audit.append, [event])

    async def record_rejection(self, scope: Any, reply: ErrorReply) -> None:
        facts = RequestFacts.from_scope(scope)
        try:
            await self.record(rejection_event(facts, reply, orjson.dumps(reply.body(facts.request_id))))
        except Exception:
            log.exception("could not audit a refused request", extra={"request_id": facts.request_id})
        self.metrics.inc("citygov_api_data_requests_total", decision=reply.decision)

    def authenticate(self, scope: Any, authorization: str | None, body: bytes) -> Caller:
        """The caller, or SignedRequestError after its ``auth.failed`` entry is written (in a worker thread)."""
        try:
            try:
                url = request_url(scope, self.settings.api_public_url)
            except ValueError:  # the request's own URL cannot be canonicalized (a bad Host header)
                raise SignedRequestError("url_invalid", "the request URL cannot be canonicalized") from None
            caller = self.authenticator.authenticate(method=scope["method"], url=url, body=body,
                                                     authorization=authorization)
        except SignedRequestError as failure:
            self._record_auth_failure(scope, failure)
            raise
        scope["state"]["caller"] = caller.actor
        scope["state"]["request_jti"] = caller.jti
        return caller

    def _record_auth_failure(self, scope: Any, failure: SignedRequestError) -> None:
        self.metrics.inc("citygov_api_auth_failures_total", reason=failure.reason)
        self.metrics.inc("citygov_api_data_requests_total", decision="unauthenticated")
        facts = RequestFacts.from_scope(scope)
        log.warning("authentication failed", extra={"request_id": facts.request_id, "reason": failure.reason,
                                                    "detail": failure.detail})
        reply = error_reply(failure)
        try:
            self.audit.append([auth_failed_event(facts, failure, reply.status,
                                                 orjson.dumps(reply.body(facts.request_id)))])
        except Exception:  # the caller gets its 401 all the same; nothing was released
            log.exception("could not audit a failed authentication", extra={"request_id": facts.request_id})


def create_app(
    settings: Settings,
    *,
    backend: QueryBackend | None = None,
    engine: Engine | None = None,
    clock: Clock = utc_now,
    retention: bool = False,
) -> FastAPI:
    """The API for ``settings``; ``backend`` defaults to the sharing layer's QueryService.

    ``retention=True`` (``citygov serve``) also runs the retention sweep every
    ``CITYGOV_RETENTION_INTERVAL_SECONDS`` in a thread of its own, stopped with the server.
    """
    owns_engine = engine is None
    if engine is None:
        engine = create_db_engine(settings.resolved_database_url())
        init_schema(engine)
    ensure_tables(engine)
    keyring = Keyring.from_settings(settings, engine, clock=clock)
    audit = AuditLog.open(engine, settings.data_dir, clock=clock, keyring=keyring)
    signer = ResponseSigner(keyring.response_signing_key())
    registry = DepartmentRegistry(engine, audit, clock=clock)
    replay = ReplayStore(engine)
    state = ApiState(
        settings=settings, engine=engine, audit=audit, signer=signer, registry=registry, replay=replay,
        authenticator=Authenticator(registry, replay, settings, clock=clock),
        backend=backend or sharing_backend(settings, engine, clock=clock),
        metrics=Metrics(), clock=clock, owns_engine=owns_engine,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        purge = asyncio.create_task(_purge_loop(state))
        stop = threading.Event()
        sweeper = None
        if retention:
            sweeper = threading.Thread(target=run_periodically, args=(state.engine, settings),
                                       kwargs={"stop": stop, "clock": clock}, name="retention-sweep", daemon=True)
            sweeper.start()
        await run_in_threadpool(_readiness, state)  # load the policy engine now, not on the first request
        log.info("api started", extra={"response_kid": signer.kid, "audience": settings.api_audience})
        try:
            yield
        finally:
            stop.set()
            if sweeper is not None:
                await run_in_threadpool(sweeper.join, 30)
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
            if state.owns_engine:
                state.engine.dispose()
            log.info("api stopped")

    app = FastAPI(
        title="citygov signed data API", version=__version__, lifespan=lifespan,
        description="Signed requests in, signed and audited answers out. See docs/signed-requests.md.",
    )
    app.state.api = state
    _add_error_handlers(app)
    _add_routes(app, state)

    async def verified_auditor(request: Request) -> Caller:
        return await _auditor(state, request)

    app.include_router(audit_router(lambda: state.audit, authenticate=verified_auditor), prefix="/v1/audit")
    consents = ConsentRegistry(engine, keyring, clock=clock, issuer=settings.receipt_issuer,
                               on_change=ConsentAuditor(audit))

    async def verified_privacy_officer(request: Request) -> Caller:
        return await _with_role(state, request, PRIVACY_OFFICER_ROLE, dataset="consent", purpose="consent")

    app.include_router(consent_router(lambda: consents, authenticate=verified_privacy_officer),
                       prefix="/v1/consents")
    _install_openapi(app, state.backend.request_model)
    app.add_middleware(ApiMiddleware, state=state)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory (``citygov serve``): settings from the environment, JSON logs."""
    from governance.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings, retention=True)


# --- routes -------------------------------------------------------------------------------------------------


def _add_routes(app: FastAPI, state: ApiState) -> None:
    @app.post(
        "/v1/data/query", tags=["data"], summary="Run a signed data query",
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": {
            "$ref": f"#/components/schemas/{state.backend.request_model.__name__}"}}}}},
        responses={200: {"description": "Records released, signed (X-Citygov-Signature)"},
                   400: {"description": "Malformed or invalid query"},
                   401: {"description": "Not authenticated (one generic body)"},
                   403: {"description": "Denied by policy, agreement, consent or registration"},
                   413: {"description": "Body or result over its limit"},
                   429: {"description": "Request quota spent"}},
    )
    async def data_query(request: Request) -> Response:
        return await _data_query(state, request)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: database reachable, policy engine loaded")
    async def readyz() -> Response:
        checks = await run_in_threadpool(_readiness, state)
        ready = all(v == "ok" for k, v in checks.items() if k != "policy_revision")
        return Response(orjson.dumps({"status": "ready" if ready else "not_ready", **checks}),
                        status_code=200 if ready else 503, media_type=JSON)

    @app.get("/.well-known/jwks.json", tags=["keys"], summary="Keys that sign API responses")
    async def jwks() -> Response:
        return Response(orjson.dumps(state.signer.jwks()), media_type="application/jwk-set+json",
                        headers={"Cache-Control": "public, max-age=300"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics of this process")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)


async def _data_query(state: ApiState, request: Request) -> Response:
    body = await request.body()
    # one worker-thread hop for the whole request: every hop is a thread wake-up and a loop wake-up
    return await run_in_threadpool(_answer_query, state, request.scope, request.headers.get("authorization"), body)


def _answer_query(state: ApiState, scope: Any, authorization: str | None, body: bytes) -> Response:
    """Authenticate, parse, run, audit (in a worker thread); the middleware signs what this returns."""
    facts = RequestFacts.from_scope(scope)
    try:
        caller = state.authenticate(scope, authorization, body)
    except SignedRequestError as failure:
        return _reply_response(error_reply(failure), facts.request_id)
    query: Any = None
    result: Any = None
    reply: ErrorReply | None = None
    stage: str | None = None
    try:
        query = state.backend.request_model.model_validate_json(body)
        stage = str(stage_for(Actor(kind=caller.kind, id=caller.name), agreement=getattr(query, "agreement", None),
                              break_glass=bool(getattr(query, "break_glass", False))).value)
        if caller.purposes and query.purpose not in caller.purposes:
            raise AccessDeniedError("purpose not registered", reasons=("purpose_not_registered",))
        result = state.backend.service.run(state.backend.make_requester(caller), query)
        content = orjson.dumps(_payload(result, facts.request_id))
        status = 200
    except Exception as exc:
        reply, result = error_reply(exc), None
        _log_failure(exc, reply, facts)
        content, status = orjson.dumps(reply.body(facts.request_id)), reply.status
    event = request_event(facts, caller, status=status, body=content, query=query, result=result, reply=reply,
                          stage=stage)
    try:
        state.audit.append([event])
    except Exception:
        log.exception("could not audit a data request: nothing released", extra={"request_id": facts.request_id})
        return _reply_response(ErrorReply(503, "audit_unavailable", "temporarily unavailable; try again later"),
                               facts.request_id)
    state.metrics.inc("citygov_api_data_requests_total", decision=event.decision or "allow")
    context = scope["state"]
    if result is not None:
        state.metrics.inc("citygov_api_records_released_total", len(result.records))
        context["decision_id"], context["policy_revision"] = str(result.decision_id), str(result.policy_revision)
    elif reply is not None and reply.decision_id is not None:
        context["decision_id"] = str(reply.decision_id)
    return Response(content, status_code=status, media_type=JSON, headers=dict(reply.headers) if reply else None)


def _payload(result: Any, request_id: str) -> dict[str, Any]:
    return {
        "data": result.records,
        "next_cursor": result.next_cursor,
        "meta": {
            "count": len(result.records), "fields": list(result.fields), "stage": result.stage,
            "decision_id": result.decision_id, "policy_revision": result.policy_revision,
            "obligations": list(result.obligations), "suppressed": result.suppressed,
            "epsilon_spent": result.epsilon_spent, "request_id": request_id,
        },
    }


async def _auditor(state: ApiState, request: Request) -> Caller:
    """The audit router's authentication: a signed request from a caller with the auditor role."""
    return await _with_role(state, request, AUDITOR_ROLE, dataset="audit-log", purpose="audit")


async def _with_role(state: ApiState, request: Request, role: str, *, dataset: str, purpose: str) -> Caller:
    """A router's authentication: a signed request from a caller registered with ``role``; audited either way."""
    body = await request.body()
    query_keys = sorted({key for key in request.query_params})[:16]
    return await run_in_threadpool(_check_role, state, request.scope, request.headers.get("authorization"),
                                   body, query_keys, role, dataset, purpose)


def _check_role(state: ApiState, scope: Any, authorization: str | None, body: bytes,
                query_keys: list[str], role: str, dataset: str, purpose: str) -> Caller:
    facts = RequestFacts.from_scope(scope)
    caller = state.authenticate(scope, authorization, body)
    allowed = role in caller.roles
    message = f"the {dataset} API needs the {role} role"
    reason = f"{role.replace('-', '_')}_role_required"
    reply = None if allowed else ErrorReply(403, "access_denied", message, reasons=(reason,))
    content = b"" if reply is None else orjson.dumps(reply.body(facts.request_id))
    state.audit.append([request_event(facts, caller, status=200 if reply is None else 403, body=content,
                                      reply=reply, dataset=dataset, purpose=purpose,
                                      extra={"query_parameters": query_keys})])
    state.metrics.inc("citygov_api_data_requests_total", decision="allow" if allowed else "deny")
    if reply is not None:
        raise AccessDeniedError(message, reasons=reply.reasons)
    return caller


# --- errors, readiness, housekeeping ------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        reply = error_reply(exc)
        facts = RequestFacts.from_scope(request.scope)
        _log_failure(exc, reply, facts)
        return _reply_response(reply, facts.request_id)

    for kind in (Exception, CitygovError, HTTPException, RequestValidationError):
        app.add_exception_handler(kind, handle)


def _reply_response(reply: ErrorReply, request_id: str) -> Response:
    return Response(orjson.dumps(reply.body(request_id)), status_code=reply.status, media_type=JSON,
                    headers=dict(reply.headers))


def _log_failure(exc: BaseException, reply: ErrorReply, facts: RequestFacts) -> None:
    if reply.status >= 500:
        log.error("request failed", exc_info=exc, extra={"request_id": facts.request_id, "status": reply.status})
    elif not isinstance(exc, SignedRequestError):
        log.info("request refused", extra={"request_id": facts.request_id, "status": reply.status,
                                           "error": reply.code, "reasons": list(reply.reasons)})


def _readiness(state: ApiState) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
    try:
        revision = state.backend.policy_revision()
        checks["policy"] = "ok" if revision else "not loaded"
        if revision:
            checks["policy_revision"] = revision
    except Exception as exc:
        checks["policy"] = f"not loaded ({type(exc).__name__})"
    return checks


async def _purge_loop(state: ApiState) -> None:
    """Delete expired request ids every ``api_replay_purge_seconds`` until cancelled."""
    while True:
        await asyncio.sleep(state.settings.api_replay_purge_seconds)
        try:
            now = int(state.clock().timestamp())
            removed = await run_in_threadpool(state.replay.purge, now)
            state.metrics.inc("citygov_api_replay_ids_purged_total", removed)
        except Exception:
            log.exception("purging expired request ids failed; will retry")


def _install_openapi(app: FastAPI, model: type[BaseModel]) -> None:
    """Publish the query body's schema (the route reads the raw body itself, so FastAPI cannot see it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
            schema["components"]["securitySchemes"] = {"signedRequest": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT (see docs/signed-requests.md)"}}
            schema["security"] = [{"signedRequest": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
