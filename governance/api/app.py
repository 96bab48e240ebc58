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
import dataclasses
import gc
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from governance import __version__
from governance.api.auth import Authenticator, Caller, Claimed, SignedRequestError, replayed, request_url
from governance.api.checkpoint import WalCheckpointer, needs_checkpointer
from governance.api.departments import DepartmentRegistry
from governance.api.errors import ErrorReply, error_reply
from governance.api.events import RequestFacts, auth_failed_event, rejection_event, request_event
from governance.api.metrics import CONTENT_TYPE, Metrics
from governance.api.middleware import DATA_QUERY_PATH, ApiMiddleware
from governance.api.replay import ReplayStore
from governance.api.signing import ResponseSigner
from governance.api.tables import ensure_tables
from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog, local_writer, writer_lock
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
from governance.sharing.decisions import HeldDecisions, holding_decisions
from governance.sharing.reader import SharedReads, sharing_reads
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
    data_route: Any = None
    """The ``POST /v1/data/query`` route (for the metrics' route label) once the app has it: the middleware then
    calls :meth:`data_query` itself."""

    loop_writer: threading.RLock | None = None
    """On SQLite, this process's writer lock (``local_writer``): while it is free, a data query is answered on the
    event loop itself, holding it (see :meth:`data_query`). None on PostgreSQL: every query goes to a thread."""
    loop_connection: Connection | None = None
    """The connection the queries answered on the event loop read and write on, kept from one to the next (only
    the loop's thread touches it, and only while it holds ``loop_writer``); closed when the app stops."""
    checkpointer: WalCheckpointer | None = None
    """On a SQLite file, the thread that checkpoints the WAL off the request path while the app runs
    (``governance.api.checkpoint``); None on PostgreSQL."""

    def lend_loop_connection(self, reads: SharedReads) -> None:
        """Hand the loop's kept connection to a request's reads (they take one from the pool if there is none)."""
        reads.conn, self.loop_connection = self.loop_connection, None

    def keep_loop_connection(self, reads: SharedReads) -> None:
        """Take the request's connection back for the next one, with nothing begun on it; one that failed (closed
        or invalidated by an error) goes back to the pool, and the next request takes a fresh one."""
        conn, reads.conn = reads.conn, None
        if conn is None:
            return
        if conn.closed or conn.invalidated:
            conn.close()
            return
        try:
            if conn.in_transaction():  # a read through ``Connection.execute`` began one: nothing is held on SQLite
                conn.rollback()
            else:
                driver: Any = conn.connection.dbapi_connection
                if getattr(driver, "in_transaction", False):  # never left so by this code; never kept so either
                    driver.rollback()
        except Exception:
            conn.close()
            raise
        self.loop_connection = conn

    def close_loop_connection(self) -> None:
        conn, self.loop_connection = self.loop_connection, None
        if conn is not None:
            conn.close()

    async def data_query(self, scope: Any, body: bytes) -> Response:
        """Answer a data query (authenticate, parse, run, audit; any error in our format).

        On PostgreSQL in one worker thread (a request waits on the network several times). On SQLite the whole
        request is CPU work — reads never wait in WAL mode and commits do not sync — so when no other thread of
        this process is writing (the writer lock is free at once) it runs right here on the event loop, holding
        that lock until it is answered: the hop to a worker thread and back, and the worker threads' fight for
        the GIL with the loop, cost more CPU than the request itself (~0.4 ms of ~2 ms under uvicorn). When the
        lock is taken (a retention sweep, a router's write, a query answered in a thread) the request goes to a
        thread as before and waits there, never on the loop. A writer in *another process* (a second worker, an
        ingest run) can still make the loop wait on SQLite's own lock for the length of that writer's commit.
        """
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            lock = self.loop_writer
            if lock is not None and lock.acquire(blocking=False):
                try:
                    return _answer_query(self, scope, authorization, body, writer_held=True)
                finally:
                    lock.release()
            # one worker-thread hop for the whole request: every hop is a thread wake-up and a loop wake-up
            return await run_in_threadpool(_answer_query, self, scope, authorization, body)
        except Exception as exc:
            reply = error_reply(exc)
            facts = RequestFacts.from_scope(scope)
            _log_failure(exc, reply, facts)
            return _reply_response(reply, facts.request_id)

    async def record(self, event: AuditEvent) -> None:
        await run_in_threadpool(self.audit.append, [event])

    async def record_rejection(self, scope: Any, reply: ErrorReply) -> None:
        facts = RequestFacts.from_scope(scope)
        try:
            await self.record(rejection_event(facts, reply, orjson.dumps(reply.body(facts.request_id))))
        except Exception:
            log.exception("could not audit a refused request", extra={"request_id": facts.request_id})
        self.metrics.inc("citygov_api_data_requests_total", decision=reply.decision)

    def authenticate(self, scope: Any, authorization: str | None, body: bytes, *, claim: bool = True,
                     write_on: Callable[[], Connection | None] | None = None) -> Caller:
        """The caller, or SignedRequestError after its ``auth.failed`` entry is written (in a worker thread).

        ``claim=False``: every check but the replay store; the request's :meth:`write_request` records the
        ``jti`` (and refuses a replay) in the transaction that writes its audit entry.
        ``write_on``: called on a failure, before the entry is written — where to write it (see
        :meth:`record_auth_failure`); a data query's reads give their pooled connection back there.
        """
        try:
            try:
                url = request_url(scope, self.settings.api_public_url)
            except ValueError:  # the request's own URL cannot be canonicalized (a bad Host header)
                raise SignedRequestError("url_invalid", "the request URL cannot be canonicalized") from None
            caller = self.authenticator.authenticate(method=scope["method"], url=url, body=body,
                                                     authorization=authorization, claim=claim)
        except SignedRequestError as failure:
            self.record_auth_failure(scope, failure, on=None if write_on is None else write_on())
            raise
        scope["state"]["caller"] = caller.actor
        scope["state"]["request_jti"] = caller.jti
        return caller

    def write_request(self, caller: Caller, entry: Callable[[], AuditEvent], *, claim: bool,
                      held: HeldDecisions | None = None, on: Connection | None = None) -> None:
        """The request's one write transaction: its ``jti`` (unless already claimed), the policy decisions held
        for it, then its own entry — built by ``entry`` once the decisions have their sequence numbers.

        ``on``: the connection to write on (the request's read connection on SQLite, see :func:`_write_on`),
        else one from the pool. Raises ``SignedRequestError("jti_replayed")`` (nothing written) when the ``jti``
        is already recorded — by an earlier request or by one racing this one, in this process or another; any
        other exception means nothing was written either.
        """
        with local_writer(self.engine), _transaction(self.engine, on) as conn:
            if claim and not self.replay.claim_in(conn, caller.name, caller.jti, caller.expires_at):
                raise replayed(Claimed(kid=caller.kid, key_owner=caller.name))
            decisions = held.events if held is not None else []

            def after_decisions(seq: int) -> list[AuditEvent]:
                if held is not None:
                    held.appended(seq - len(decisions))
                return [entry()]

            self.audit.append(decisions, conn=conn, then=after_decisions)  # one append, one signed tree head

    def claim_jti(self, caller: Caller, *, on: Connection | None = None) -> None:
        """Record the caller's ``jti`` in a transaction of its own (on ``on``, else on a pooled connection, after
        the writer lock); ``SignedRequestError("jti_replayed")`` when it is already recorded."""
        with local_writer(self.engine), _transaction(self.engine, on) as conn:
            if not self.replay.claim_in(conn, caller.name, caller.jti, caller.expires_at):
                raise replayed(Claimed(kid=caller.kid, key_owner=caller.name))

    def record_auth_failure(self, scope: Any, failure: SignedRequestError, *, on: Connection | None = None) -> None:
        """Count and log the failure and write its ``auth.failed`` entry: on ``on`` (the connection of a request
        answered on the event loop, which holds the writer lock), else on a pooled connection after the writer
        lock — never while this thread holds another pooled connection (see :func:`_write_on`). The caller gets
        its 401 whether or not the entry could be written; nothing is released either way."""
        self.metrics.inc("citygov_api_auth_failures_total", reason=failure.reason)
        self.metrics.inc("citygov_api_data_requests_total", decision="unauthenticated")
        facts = RequestFacts.from_scope(scope)
        log.warning("authentication failed", extra={"request_id": facts.request_id, "reason": failure.reason,
                                                    "detail": failure.detail})
        reply = error_reply(failure)
        try:
            event = auth_failed_event(facts, failure, reply.status, orjson.dumps(reply.body(facts.request_id)))
            with local_writer(self.engine), _transaction(self.engine, on) as conn:
                self.audit.append([event], conn=conn)
        except Exception:  # the caller gets its 401 all the same; nothing was released
            log.exception("could not audit a failed authentication", extra={"request_id": facts.request_id})


def create_app(
    settings: Settings,
    *,
    backend: QueryBackend | None = None,
    engine: Engine | None = None,
    clock: Clock = utc_now,
    retention: bool = False,
    freeze_startup_objects: bool = False,
) -> FastAPI:
    """The API for ``settings``; ``backend`` defaults to the sharing layer's QueryService.

    ``retention=True`` (``citygov serve``) also runs the retention sweep every
    ``CITYGOV_RETENTION_INTERVAL_SECONDS`` in a thread of its own, stopped with the server.

    ``freeze_startup_objects=True`` (:func:`app_from_env`: a server process of its own): once started (policy
    engine loaded), everything alive is moved out of the cyclic garbage collector's reach (``gc.freeze``) until the
    app stops. A full collection otherwise walks those ~126,000 objects — modules, the compiled policy, the app —
    each time: a 75-80 ms pause of the whole process (the event loop and every thread) measured under load, however
    few objects it then frees. Garbage made while serving is still collected; nothing alive at startup was garbage
    (a collection runs first).
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
        metrics=Metrics(), clock=clock, owns_engine=owns_engine, loop_writer=writer_lock(engine),
        checkpointer=WalCheckpointer(engine) if needs_checkpointer(engine) else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        purge = asyncio.create_task(_purge_loop(state))
        if state.checkpointer is not None:
            state.checkpointer.start()
        stop = threading.Event()
        sweeper = None
        if retention:
            sweeper = threading.Thread(target=run_periodically, args=(state.engine, settings),
                                       kwargs={"stop": stop, "clock": clock}, name="retention-sweep", daemon=True)
            sweeper.start()
        await run_in_threadpool(_readiness, state)  # load the policy engine now, not on the first request
        if freeze_startup_objects:
            gc.collect()
            gc.freeze()
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
            if state.checkpointer is not None:
                await run_in_threadpool(state.checkpointer.stop)
            state.close_loop_connection()
            if state.owns_engine:
                state.engine.dispose()
            if freeze_startup_objects:
                gc.unfreeze()
            log.info("api stopped")

    app = _ApiApp(
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
    app.data_query_path = ApiMiddleware(app.framework, state)
    return app


class _ApiApp(FastAPI):
    """FastAPI, with ``POST /v1/data/query`` handed straight to :class:`ApiMiddleware` (``data_query_path``).

    Every other request goes through FastAPI's whole stack (server-error and telemetry middleware, body limit,
    then ``ApiMiddleware`` and the router). The data query needs none of it: ``ApiMiddleware`` answers that route
    itself, every error included, in our format (see :mod:`governance.api.middleware`); the layers in between only
    cost time on each call and on each message sent (a few tens of µs a request)."""

    data_query_path: Any = None

    async def framework(self, scope: Any, receive: Any, send: Any) -> None:
        """FastAPI's own handling (what ``data_query_path`` would hand on to for any other request)."""
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fast = self.data_query_path
        if fast is not None and scope["type"] == "http" and scope["method"] == "POST" \
                and scope["path"] == DATA_QUERY_PATH and not scope.get("root_path") and not self.root_path:
            scope["app"] = self
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def app_from_env() -> FastAPI:
    """The uvicorn factory (``citygov serve``): settings from the environment, JSON logs."""
    from governance.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings, retention=True, freeze_startup_objects=True)


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

    state.data_route = next(r for r in app.routes if getattr(r, "path", None) == "/v1/data/query")

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
    """The route's handler (the middleware normally answers this route itself: ``ApiState.data_query``)."""
    return await state.data_query(request.scope, await request.body())


def _answer_query(state: ApiState, scope: Any, authorization: str | None, body: bytes, *,
                  writer_held: bool = False) -> Response:
    """Authenticate, parse, run, audit (on the event loop holding the SQLite writer lock — ``writer_held`` —, else
    in a worker thread); the middleware signs what this returns.

    The request writes once: its ``jti``, the policy decision entries held while the query ran and its own
    ``data.request`` entry go in one transaction (``ApiState.write_request``), and the answer — which names
    the decision entry's sequence number — is built inside it, so nothing leaves unless all of it committed.
    The sharing stage claims its ``jti`` first, in a transaction of its own: its query may spend a request
    quota or a privacy budget, which a replayed token must not reach.
    """
    facts = RequestFacts.from_scope(scope)
    # the key lookup, the agreements register and the rows share one pooled connection, given back before the write;
    # on the event loop (SQLite, writer lock held) the loop's kept connection, which the write then uses too
    with sharing_reads(state.engine) as reads:
        if not writer_held:
            return _answer_authenticated(state, scope, authorization, body, facts, reads)
        state.lend_loop_connection(reads)  # no pool checkout and check-in a request
        try:
            return _answer_authenticated(state, scope, authorization, body, facts, reads, writer_held)
        finally:
            state.keep_loop_connection(reads)


def _answer_authenticated(state: ApiState, scope: Any, authorization: str | None, body: bytes,
                          facts: RequestFacts, reads: SharedReads, writer_held: bool = False) -> Response:
    try:
        caller = state.authenticate(scope, authorization, body, claim=False,
                                    write_on=lambda: _write_on(reads, writer_held))
    except SignedRequestError as failure:
        return _reply_response(error_reply(failure), facts.request_id)
    answer = _Answer(facts.request_id)
    claimed = False
    with holding_decisions() as held:
        try:
            answer.query = state.backend.request_model.model_validate_json(body)
            query = answer.query
            answer.stage = str(stage_for(Actor(kind=caller.kind, id=caller.name),
                                         agreement=getattr(query, "agreement", None),
                                         break_glass=bool(getattr(query, "break_glass", False))).value)
            if answer.stage == "sharing":  # the key lookup's connection goes back first (see _write_on)
                state.claim_jti(caller, on=_write_on(reads, writer_held))
                claimed = True
            if caller.purposes and query.purpose not in caller.purposes:
                raise AccessDeniedError("purpose not registered", reasons=("purpose_not_registered",))
            answer.released(state.backend.service.run(state.backend.make_requester(caller), query))
        except SignedRequestError as failure:  # a replayed jti, found before the query ran
            state.record_auth_failure(scope, failure, on=_write_on(reads, writer_held))
            return _reply_response(error_reply(failure), facts.request_id)
        except Exception as exc:
            answer.refused(exc, facts)
    try:
        state.write_request(caller, lambda: answer.entry(facts, caller, held), claim=not claimed, held=held,
                            on=_write_on(reads, writer_held))
    except SignedRequestError as failure:  # the jti was recorded first, by an earlier or a racing request
        state.record_auth_failure(scope, failure, on=_write_on(reads, writer_held))
        return _reply_response(error_reply(failure), facts.request_id)
    except Exception:
        log.exception("could not audit a data request: nothing released", extra={"request_id": facts.request_id})
        return _reply_response(ErrorReply(503, "audit_unavailable", "temporarily unavailable; try again later"),
                               facts.request_id)
    event, content = answer.event, answer.content
    assert event is not None
    state.metrics.inc("citygov_api_data_requests_total", decision=event.decision or "allow")
    context = scope["state"]
    result, reply = answer.result, answer.reply
    if result is not None:
        state.metrics.inc("citygov_api_records_released_total", len(result.records))
        context["decision_id"], context["policy_revision"] = str(answer.decision_id), str(result.policy_revision)
    elif reply is not None and reply.decision_id is not None:
        context["decision_id"] = str(reply.decision_id)
    return Response(content, status_code=answer.status, media_type=JSON,
                    headers=dict(reply.headers) if reply else None)


def _write_on(reads: SharedReads, writer_held: bool) -> Connection | None:
    """Where each of the request's writes goes — its one write transaction, the sharing stage's ``jti`` claim, an
    ``auth.failed`` entry.

    When this thread already holds the process's SQLite writer lock (the request is answered on the event loop,
    see ``ApiState.data_query``): on the connection its reads used — the loop's kept connection, so no pool
    checkout at all (SQLite reads run without a transaction, so nothing of the reads is held open). The lock was
    taken before that connection, as the request's write takes them (lock, then connection). Otherwise (a worker
    thread, or PostgreSQL, whose reads ran in autocommit) the read connection goes back to the pool first and the
    write takes one of its own, after the lock: a thread never waits for the lock, or for a second pooled
    connection, while it holds one. (Holding one while waiting for either is a deadlock once the pool is short:
    two requests each holding a connection, each waiting for another, or for the lock whose holder waits for a
    connection — every one of them failed by the pool timeout.) A later read takes a connection again."""
    conn = reads.conn
    if writer_held and conn is not None and conn.dialect.name == "sqlite" and not conn.invalidated:
        return conn
    reads.close()
    return None


@contextlib.contextmanager
def _transaction(engine: Engine, conn: Connection | None) -> Iterator[Connection]:
    """A transaction on ``conn`` (committed, or rolled back on any exception), else on a pooled connection."""
    if conn is None:
        with engine.begin() as own:
            yield own
        return
    if conn.in_transaction():  # a read through ``Connection.execute`` began one: it holds nothing on SQLite
        conn.rollback()
    with conn.begin():
        yield conn


_DATA = b'{"data":'
_NEXT_CURSOR = b',"next_cursor":'
_META = b',"meta":'


class _Answer:
    """One data query's answer: what the query layer returned or raised, turned into the body and the audit
    entry once the decision ids are known (inside the request's write transaction).

    The records are encoded (and hashed) before that transaction; only the small ``meta`` member, which names
    the decision, is encoded inside it. The body is the same bytes as ``orjson.dumps`` of the whole payload.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.query: Any = None
        self.stage: str | None = None
        self.result: Any = None
        self.reply: ErrorReply | None = None
        self.status = 200
        self.decision_id: str | None = None
        self.content = b""
        self.event: AuditEvent | None = None
        self._head = b""
        self._hash: Any = None

    def released(self, result: Any) -> None:
        self.result = result
        records = getattr(result, "records_json", None)  # the query layer's own encoding, when it kept it
        self._head = b"".join((_DATA, records if isinstance(records, bytes) else orjson.dumps(result.records),
                               _NEXT_CURSOR, orjson.dumps(result.next_cursor), _META))
        self._hash = hashlib.sha256(self._head)

    def refused(self, exc: Exception, facts: RequestFacts) -> None:
        self.reply, self.result = error_reply(exc), None
        self.status = self.reply.status
        _log_failure(exc, self.reply, facts)

    def entry(self, facts: RequestFacts, caller: Caller, held: HeldDecisions) -> AuditEvent:
        """The body and the ``data.request`` entry, with every held decision's placeholder replaced by its id."""
        result, reply = self.result, self.reply
        digest: str | None = None
        if result is not None:
            self.decision_id = held.resolve(str(result.decision_id))
            if self.decision_id != result.decision_id:
                result = dataclasses.replace(result, decision_id=self.decision_id)
                self.result = result
            tail = orjson.dumps(_meta(result, self.request_id)) + b"}"
            self.content = self._head + tail
            hasher = self._hash.copy()
            hasher.update(tail)
            digest = hasher.hexdigest()
        else:
            assert reply is not None
            if held.is_placeholder(reply.decision_id):
                reply = self.reply = dataclasses.replace(reply, decision_id=held.resolve(reply.decision_id))
            self.content = orjson.dumps(reply.body(self.request_id))
        self.event = request_event(facts, caller, status=self.status, body=self.content, body_sha256=digest,
                                   query=self.query, result=result, reply=reply, stage=self.stage)
        return self.event


def _meta(result: Any, request_id: str) -> dict[str, Any]:
    return {
        "count": len(result.records), "fields": list(result.fields), "stage": result.stage,
        "decision_id": result.decision_id, "policy_revision": result.policy_revision,
        "obligations": list(result.obligations), "suppressed": result.suppressed,
        "epsilon_spent": result.epsilon_spent, "request_id": request_id,
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
    caller = state.authenticate(scope, authorization, body, claim=False)
    allowed = role in caller.roles
    message = f"the {dataset} API needs the {role} role"
    reason = f"{role.replace('-', '_')}_role_required"
    reply = None if allowed else ErrorReply(403, "access_denied", message, reasons=(reason,))
    content = b"" if reply is None else orjson.dumps(reply.body(facts.request_id))
    event = request_event(facts, caller, status=200 if reply is None else 403, body=content, reply=reply,
                          dataset=dataset, purpose=purpose, extra={"query_parameters": query_keys})
    try:  # the jti and the request's entry in one transaction, before the router does anything
        state.write_request(caller, lambda: event, claim=True)
    except SignedRequestError as failure:
        state.record_auth_failure(scope, failure)
        raise
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
