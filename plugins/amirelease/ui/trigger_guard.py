"""Triggering ami_release / ami_rollback / ami_retention_manual: runs named after what they do,
and bad form input answered in words (issue 13).

Airflow 3.3 names every manual run ``manual__<time>`` (the timetable that names runs is not
given the run's conf) and answers a param that fails its schema with jsonschema's own words
("'1.2' does not match '^(0|[1-9]\\d*)\\.…'"). This ASGI middleware sits in front of Airflow's
API server (a plugin's ``fastapi_root_middlewares``) and looks only at
``POST /api/v2/dags/<one of ours>/dagRuns``, the call the trigger form and every API client
make:

- each param the DAG declares is checked against the DAG's own schema (the serialized DAG in
  the metadata DB, so the DAG file stays the one place the rules live); a failure is answered
  400 with the param's title, what was wrong and its description: "Version: '1.2' is not in the
  expected form. MAJOR.MINOR.PATCH in plain digits, …". Nothing is created.
- a trigger that repeats what is already under way or done is answered 409 in words (issue
  26): an ``ami_release`` of an app and version that a queued or running run is releasing, or
  whose version has a succeeded release in the ledger (S3, one listing, unless ``rebuild`` is
  ticked); an ``ami_rollback`` of an app that a queued or running rollback is rolling back.
  Active runs come from the metadata DB (the API server has it); the ledger through the AWS
  connection. Preflight and the lock remain the authority: when either look-up fails, the
  trigger goes on and preflight decides.
- a run without a caller-chosen id is named after its conf, the second and a short random
  suffix: ``demo-web_1.2.0__2026-11-26T13:01:56Z-3f9c2a`` (release), ``rollback_demo-web_to_1.1.0__…``
  (rollback), ``dry-run__…`` (manual retention), so the runs list says what each run is about and
  two triggers in one second (a double click, a re-sent webhook) are two runs, never the
  database's "Unique constraint violation".

- the check for a repeat and the creation of the run are one step per app: triggers of
  ``ami_release`` or ``ami_rollback`` for the same app are handed to Airflow one at a time (an
  asyncio lock in this process and, on PostgreSQL, an advisory lock for the other API server
  workers and replicas, held until Airflow has answered), so two triggers sent at the same
  instant are one run and a 409, never two runs that both passed the check. Waiting for that
  lock is bounded (``LOCK_WAIT_SECONDS``); past it, or without PostgreSQL across processes, the
  trigger goes on and preflight and the app's release lock decide, as before.

Everything else (authentication, permissions, the remaining validation, creating the run) is
Airflow's: the middleware never creates anything and passes every other request through
untouched. It acts only for requests that carry credentials (a session cookie or a bearer
token), so an anonymous caller learns nothing from it (Airflow answers them 401).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from amirelease.constants import DEFAULT_AWS_CONN_ID, DagIds

log = logging.getLogger(__name__)

GUARDED_DAGS = (DagIds.RELEASE, DagIds.ROLLBACK, DagIds.RETENTION_MANUAL)
_TRIGGER_PATH = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")
_MAX_BODY = 256 * 1024  # a trigger body is a few hundred bytes; anything larger is not ours to read
_NOT_RUN_ID = re.compile(r"[^A-Za-z0-9_.~:+-]+")
RUN_SUFFIX_BYTES = 3  # 6 hex characters: two triggers in one second collide once in 16 million
LOCK_WAIT_SECONDS = 30.0  # a trigger waits at most this long for another trigger of its app
_LOCK_POLL_SECONDS = 0.05
# the most telling error first: the expected form (type, choices, pattern) before a length
_ERROR_RANK = {"type": 0, "enum": 1, "pattern": 2, "minLength": 3, "maxLength": 4}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- pure: what is wrong, in words --------------------------------------------------------------
def _shown(value: Any) -> str:
    """A value as the person typed it; control characters made visible (a newline is \\n)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)[1:-1] if any(ord(c) < 32 for c in value) else value
    else:
        text = json.dumps(value)
    return f"'{text[:60]}…'" if len(text) > 60 else f"'{text}'"


def _words(title: str, description: str, value: Any, error: Any) -> str:
    """One jsonschema error as a sentence for the person at the form."""
    kind = error.validator
    limit = error.validator_value
    hint = f" {description.rstrip('.')}." if description else ""
    if value is None or value == "":
        if kind in ("pattern", "minLength", "enum", "type"):
            return f"{title} is empty.{hint}"
    if kind == "pattern":
        return f"{title}: {_shown(value)} is not in the expected form.{hint}"
    if kind == "minLength":
        return f"{title} is too short ({len(value)} characters; at least {limit}).{hint}"
    if kind == "maxLength":
        return f"{title}: {len(value)} characters is too long (at most {limit})."
    if kind == "enum":
        choices = ", ".join(str(c) for c in limit if c is not None)
        return f"{title}: {_shown(value)} is not one of the choices ({choices}).{hint}"
    if kind == "type":
        wanted = " or ".join(limit) if isinstance(limit, list) else str(limit)
        return f"{title}: {_shown(value)} is not a {wanted.replace('null', 'empty value')}.{hint}"
    if kind in ("minimum", "maximum"):
        side = "at least" if kind == "minimum" else "at most"
        return f"{title}: {_shown(value)} is too {'small' if kind == 'minimum' else 'large'} ({side} {limit})."
    return f"{title}: {_shown(value)} is not accepted ({error.message}).{hint}"


def problems(params: Mapping[str, tuple[Mapping[str, Any], str, Any]], conf: Mapping[str, Any]) -> list[str]:
    """Every param that fails its schema, in words; [] when the conf is acceptable.

    :param params: name -> (JSON schema, description, default) as the DAG declares them.
    :param conf: what the caller sent; a param it leaves out takes its default.
    """
    from jsonschema import Draft202012Validator, FormatChecker

    found: list[str] = []
    for name, (schema, description, default) in params.items():
        value = conf.get(name, default)
        title = str(schema.get("title") or name).replace(" (optional)", "").replace(" (required)", "")
        validator = Draft202012Validator(dict(schema), format_checker=FormatChecker())
        errors = sorted(
            validator.iter_errors(value), key=lambda e: (_ERROR_RANK.get(str(e.validator), 9), str(e.validator))
        )
        if errors:
            found.append(_words(title, description or "", value, errors[0]))
    unknown = sorted(set(conf) - set(params))
    if unknown:
        found.append(
            f"{', '.join(unknown)}: not a setting of this DAG (it takes {', '.join(params)}). Remove "
            f"{'it' if len(unknown) == 1 else 'them'} from the configuration JSON."
        )
    return found


def run_name(dag_id: str, conf: Mapping[str, Any], now: datetime, suffix: str | None = None) -> str | None:
    """'demo-web_1.2.0__2026-11-26T13:01:56Z-3f9c2a': what the run is about, when it was asked
    for, and a random suffix: two triggers in the same second (a double click, a re-sent webhook)
    get two run ids instead of the database's "Unique constraint violation"."""
    when = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    suffix = secrets.token_hex(RUN_SUFFIX_BYTES) if suffix is None else suffix
    app = str(conf.get("app") or "")
    if dag_id == DagIds.RELEASE and app and conf.get("version"):
        what = f"{app}_{conf['version']}"
    elif dag_id == DagIds.ROLLBACK and app:
        what = f"rollback_{app}" + (f"_to_{conf['target']}" if conf.get("target") else "")
    elif dag_id == DagIds.RETENTION_MANUAL:
        what = str(conf.get("mode") or "dry-run").replace(" ", "-")
    else:
        return None
    return f"{_NOT_RUN_ID.sub('-', what)[:200]}__{when}-{_NOT_RUN_ID.sub('-', suffix)}"


def duplicate_words(dag_id: str, conf: Mapping[str, Any], active: list[tuple[str, str, Any, Any]]) -> str | None:
    """Words for a trigger that repeats a run already queued or running, or None (pure).

    :param active: (run id, state, start or queued time, conf) of the DAG's queued and running runs.
    """
    app = conf.get("app")
    for run_id, state, since, other in active:
        other = other or {}
        if other.get("app") != app:
            continue
        at = f" since {since:%Y-%m-%d %H:%M:%S} UTC" if isinstance(since, datetime) else ""
        if dag_id == DagIds.RELEASE and other.get("version") == conf.get("version"):
            return (
                f"{app} {conf.get('version')} is already being released by run {run_id} ({state}{at}). "
                "Follow that run: when it succeeds the version is released; if it fails, trigger again."
            )
        if dag_id == DagIds.ROLLBACK:
            return (
                f"a rollback of {app} is already {state}: run {run_id}{at}. Follow that run; when it has finished, "
                "look at what runs now and trigger again if you still need to roll back."
            )
    return None


def released_already(conf: Mapping[str, Any], aws_conn_id: str = DEFAULT_AWS_CONN_ID) -> str | None:
    """For an ami_release trigger without ``rebuild``: the refusal words when the ledger (S3,
    through the AWS connection) holds a succeeded release of the version, else None. One
    listing by the version's release-id prefix; preflight makes the same check again."""
    from amirelease.aws import AwsClients
    from amirelease.ledger import Ledger, already_released, ledger_bucket, released_words, ways_on

    app, version = str(conf.get("app") or ""), str(conf.get("version") or "")
    if not app or not version or conf.get("rebuild") in (True, "true"):
        return None
    ledger = Ledger(AwsClients(aws_conn_id=aws_conn_id).s3(), ledger_bucket())
    existing = already_released(ledger.of_version(app, version), version)
    if existing is None:
        return None
    return f"{released_words(app, existing)}. To go on: {ways_on(version)}."


def active_runs(dag_id: str) -> list[tuple[str, str, Any, Any]]:
    """The DAG's queued and running runs from the metadata DB: (run id, state, since, conf)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        rows = (
            session.query(DagRun.run_id, DagRun.state, DagRun.start_date, DagRun.queued_at, DagRun.conf)
            .filter(DagRun.dag_id == dag_id, DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))
            .all()
        )
        return [(r[0], str(r[1]), r[2] or r[3], r[4]) for r in rows]


# -- one trigger of an app at a time ----------------------------------------------------------
_APP_LOCKS: dict[str, asyncio.Lock] = {}


def serial_key(dag_id: str, body: bytes) -> str | None:
    """What triggers must not pass the repeat check side by side: the app of an ami_release or
    ami_rollback trigger (None for anything else, or a body that is not a trigger's)."""
    if dag_id not in (DagIds.RELEASE, DagIds.ROLLBACK):
        return None
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None
    conf = data.get("conf") if isinstance(data, dict) else None
    app = conf.get("app") if isinstance(conf, dict) else None
    return f"trigger:{app}" if isinstance(app, str) and app else None


def advisory_lock_id(key: str) -> int:
    """A signed 64-bit id for PostgreSQL's advisory locks, stable across processes."""
    return int.from_bytes(hashlib.blake2b(f"amirelease:{key}".encode(), digest_size=8).digest(), "big", signed=True)


def db_lock(key: str, wait: float = LOCK_WAIT_SECONDS) -> Any:
    """Take the key's advisory lock on a connection of its own (PostgreSQL only): the
    connection, to give to :func:`db_unlock`; None on another database or after ``wait``."""
    from airflow import settings
    from sqlalchemy import text

    engine = settings.engine
    if engine is None or engine.dialect.name != "postgresql":
        return None
    conn = engine.connect()
    lock_id = advisory_lock_id(key)
    deadline = time.monotonic() + wait
    try:
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_id}).scalar():
            if time.monotonic() > deadline:
                log.warning("trigger guard: %s stayed locked for %.1f s; going on without it", key, wait)
                conn.close()
                return None
            time.sleep(_LOCK_POLL_SECONDS)
    except BaseException:
        conn.close()
        raise
    return conn


def db_unlock(conn: Any, key: str) -> None:
    from sqlalchemy import text

    try:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_lock_id(key)})
    finally:
        conn.close()  # a closed session ends its advisory locks too


@contextlib.asynccontextmanager
async def one_at_a_time(key: str | None) -> AsyncIterator[None]:
    """Hold the key in this process and, on PostgreSQL, across processes (see the module's
    docstring). A failure to take the database lock never fails the trigger."""
    if key is None:
        yield
        return
    from starlette.concurrency import run_in_threadpool

    lock = _APP_LOCKS.setdefault(key, asyncio.Lock())
    try:
        await asyncio.wait_for(lock.acquire(), LOCK_WAIT_SECONDS)
    except TimeoutError:
        log.warning("trigger guard: %s stayed busy for %.0f s in this process; going on", key, LOCK_WAIT_SECONDS)
        yield
        return
    try:
        conn = None
        try:
            conn = await run_in_threadpool(db_lock, key)
        except Exception as exc:  # noqa: BLE001 - never why a trigger fails: preflight and the lock decide
            log.warning("trigger guard: could not take the database lock for %s (%s); going on", key, exc)
        try:
            yield
        finally:
            if conn is not None:
                await run_in_threadpool(db_unlock, conn, key)
    finally:
        lock.release()


# -- the middleware -----------------------------------------------------------------------------
def dag_params(dag_id: str) -> dict[str, tuple[Mapping[str, Any], str, Any]] | None:
    """The params of the DAG's latest serialized version (None when Airflow does not know it)."""
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        if dag is None:
            return None
        out: dict[str, tuple[Mapping[str, Any], str, Any]] = {}
        for name, param in dag.params.items():
            out[name] = (dict(param.schema), param.description or "", param.value)
        return out


def _allowed_run_id(run_id: str) -> bool:
    from airflow.configuration import conf

    pattern = conf.get("scheduler", "allowed_run_id_pattern", fallback=r"^[A-Za-z0-9_.~:+-]+$").strip()
    return bool(re.match(pattern, run_id))


def _has_credentials(scope: Scope) -> bool:
    for key, value in scope.get("headers") or []:
        if key == b"authorization" and value.lower().startswith(b"bearer "):
            return True
        if key == b"cookie" and b"_token=" in value:
            return True
    return False


class TriggerGuard:
    """ASGI middleware for Airflow's API server: see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _TRIGGER_PATH.search(scope.get("path") or "") if scope.get("type") == "http" else None
        if (
            match is None
            or scope.get("method") != "POST"
            or match["dag_id"] not in GUARDED_DAGS
            or not _has_credentials(scope)
        ):
            await self.app(scope, receive, send)
            return
        body, more, messages = b"", True, []
        while more and len(body) <= _MAX_BODY:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
        if more or len(body) > _MAX_BODY:  # not a trigger form's body: Airflow's to judge
            await self.app(scope, _replay(messages, receive), send)
            return
        # the repeat check and Airflow's creation of the run, one trigger of an app at a time
        async with one_at_a_time(serial_key(match["dag_id"], body)):
            new_body = await self._judge(match["dag_id"], body, send)
            if new_body is None:
                return  # answered already
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-length"] + [
                (b"content-length", str(len(new_body)).encode())
            ]
            replay = _replay([{"type": "http.request", "body": new_body, "more_body": False}], receive)
            await self.app(scope, replay, send)

    async def _judge(self, dag_id: str, body: bytes, send: Send) -> bytes | None:
        """The body to hand on (renamed run), or None after answering 400 ourselves."""
        from starlette.concurrency import run_in_threadpool

        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return body  # Airflow answers malformed JSON itself
        if not isinstance(data, dict) or not isinstance(data.get("conf") or {}, dict):
            return body
        conf = data.get("conf") or {}
        try:
            params = await run_in_threadpool(dag_params, dag_id)
        except Exception:  # noqa: BLE001 - the guard must never be why a trigger fails: Airflow still validates
            log.warning("trigger guard: could not read the params of %s; leaving the check to Airflow", dag_id)
            return body
        if params is None:
            return body
        found = problems(params, conf)
        if found:
            await _answer(send, 400, f"Not started: {' '.join(found)}")
            return None
        full = {**{k: v[2] for k, v in params.items()}, **conf}
        try:
            duplicate = duplicate_words(dag_id, full, await run_in_threadpool(active_runs, dag_id))
        except Exception:  # noqa: BLE001 - never why a trigger fails: preflight and the lock are the authority
            log.warning("trigger guard: could not list the active runs of %s; leaving it to preflight", dag_id)
            duplicate = None
        if duplicate is None and dag_id == DagIds.RELEASE:
            try:
                duplicate = await run_in_threadpool(released_already, full)
            except Exception as exc:  # noqa: BLE001 - the ledger unreachable from here: preflight decides
                log.warning("trigger guard: could not read the release ledger (%s); leaving it to preflight", exc)
        if duplicate:
            await _answer(send, 409, f"Not started: {duplicate}")
            return None
        if not data.get("dag_run_id"):
            name = run_name(dag_id, full, datetime.now(UTC))
            if name and _allowed_run_id(name):
                data["dag_run_id"] = name
                return json.dumps(data).encode()
        return body


async def _answer(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again
