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
- a run without a caller-chosen id is named after its conf: ``demo-web_1.2.0__2026-11-26T13:01:56Z``
  (release), ``rollback_demo-web_to_1.1.0__…`` (rollback), ``dry-run__…`` (manual retention),
  so the runs list says what each run is about.

Everything else (authentication, permissions, the remaining validation, creating the run) is
Airflow's: the middleware never creates anything and passes every other request through
untouched. It acts only for requests that carry credentials (a session cookie or a bearer
token), so an anonymous caller learns nothing from it (Airflow answers them 401).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

GUARDED_DAGS = ("ami_release", "ami_rollback", "ami_retention_manual")
_TRIGGER_PATH = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")
_MAX_BODY = 256 * 1024  # a trigger body is a few hundred bytes; anything larger is not ours to read
_NOT_RUN_ID = re.compile(r"[^A-Za-z0-9_.~:+-]+")
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


def run_name(dag_id: str, conf: Mapping[str, Any], now: datetime) -> str | None:
    """'demo-web_1.2.0__2026-11-26T13:01:56Z': what the run is about, then when it was asked for."""
    when = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    app = str(conf.get("app") or "")
    if dag_id == "ami_release" and app and conf.get("version"):
        what = f"{app}_{conf['version']}"
    elif dag_id == "ami_rollback" and app:
        what = f"rollback_{app}" + (f"_to_{conf['target']}" if conf.get("target") else "")
    elif dag_id == "ami_retention_manual":
        what = str(conf.get("mode") or "dry-run").replace(" ", "-")
    else:
        return None
    return f"{_NOT_RUN_ID.sub('-', what)[:200]}__{when}"


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
        new_body = await self._judge(match["dag_id"], body, send)
        if new_body is None:
            return  # answered already
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-length"] + [
            (b"content-length", str(len(new_body)).encode())
        ]
        await self.app(scope, _replay([{"type": "http.request", "body": new_body, "more_body": False}], receive), send)

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
            detail = f"Not started: {' '.join(found)}"
            payload = json.dumps({"detail": detail}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return None
        if not data.get("dag_run_id"):
            name = run_name(dag_id, {**{k: v[2] for k, v in params.items()}, **conf}, datetime.now(UTC))
            if name and _allowed_run_id(name):
                data["dag_run_id"] = name
                return json.dumps(data).encode()
        return body


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again
