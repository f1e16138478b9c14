"""The Releases page: a FastAPI app that Airflow's API server mounts (see releases_plugin.py).

Authentication and permissions are Airflow's own. A FastAPI app from a plugin is mounted
as it is: Airflow does not protect it. Each route therefore depends on Airflow's
``get_user`` (airflow.api_fastapi.core_api.security), which accepts the JWT of the UI's
session cookie (``_token``, set at login) or an ``Authorization: Bearer`` token, and then asks
the configured auth manager:

- to see the page: may the user read the DAG runs of ``ami_release``;
- to lift a hold: may the user trigger ``ami_rollback`` (create a DAG run), the same check
  Airflow makes for the trigger button. Viewers see the holds but get 403 on a lift.

A browser without a valid session is sent to Airflow's login page; other clients get 401.
Every page request is read-only in AWS; the writes are lifting a hold (amirelease.holds) and
starting ami_rollback from the preview (the same permission, the DAG's own params; Airflow 3.3
cannot pre-fill its trigger form from a link, so the page carries its own short form).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException

from amirelease import catalog
from amirelease.constants import DagIds
from amirelease.errors import ConfigError, ReleaseError

log = logging.getLogger(__name__)

# What the page (and the CLI: history, release-hold) calls on AWS, for the API server's role.
CONSOLE_IAM_ACTIONS: tuple[str, ...] = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeInstanceRefreshes",
    "ec2:DeleteTags",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:PutObject",
)

URL_PREFIX = "/releases"
RELEASE_DAG = DagIds.RELEASE
ROLLBACK_DAG = DagIds.ROLLBACK
TEMPLATES = Path(__file__).with_name("templates")
RETENTION_LABELS = {
    "kept": "kept",
    "marked": "marked",
    "eligible": "eligible",
    "young": "too young",
    "gone": "deregistered",
}

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


# -- who may do what (the auth manager decides) ------------------------------------------------
def _dag_details(dag_id: str) -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.configuration import conf

    team = None
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    return DagDetails(id=dag_id, team_name=team)


def _is_authorized_dag_run(user: Any, method: str, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    return bool(
        get_auth_manager().is_authorized_dag(
            method=method,  # type: ignore[arg-type]
            access_entity=DagAccessEntity.RUN,
            details=_dag_details(dag_id),
            user=user,
        )
    )


def may_read(user: Any) -> bool:
    """May see the Releases page: may read ami_release's DAG runs."""
    return _is_authorized_dag_run(user, "GET", RELEASE_DAG)


def may_lift_holds(user: Any) -> bool:
    """May lift a forensic hold: may trigger ami_rollback (POST a DAG run), as for its trigger form."""
    return _is_authorized_dag_run(user, "POST", ROLLBACK_DAG)


async def _user(request: Request) -> Any:
    """Airflow's own authentication (cookie or bearer token); 401 without one."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if scheme.lower() == "bearer" else None
    return await get_user(request, None, bearer)


UserDep = Annotated[Any, Depends(_user)]


def _reader(user: UserDep) -> Any:
    if not may_read(user):
        raise HTTPException(
            403,
            "You may not see the Releases page: it needs permission to read the runs of ami_release. "
            "Ask an Airflow admin for it.",
        )
    return user


ReaderDep = Annotated[Any, Depends(_reader)]


# -- rendering ---------------------------------------------------------------------------------
def _roots(request: Request) -> tuple[str, str]:
    """(this app's URL path, Airflow's URL path): links work under any [api] base_url."""
    here = str(request.scope.get("root_path") or URL_PREFIX).rstrip("/")
    airflow_root = here[: -len(URL_PREFIX)] if here.endswith(URL_PREFIX) else ""
    return here, airflow_root


def _render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**context), status_code=status_code)


def _error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    here, airflow_root = _roots(request)
    titles = {400: "Not done", 401: "Please log in", 403: "Not allowed", 404: "Not found"}
    return _render(
        "error.html",
        status_code=status_code,
        title=titles.get(status_code, "Something went wrong"),
        message=message,
        here=here,
        airflow_root=airflow_root,
    )


def _app_page(
    request: Request,
    app_name: str,
    user: Any,
    *,
    lifted: str = "",
    restored: str = "",
    error: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    from amirelease.ui import present
    from amirelease.ui.collect import read_app

    here, airflow_root = _roots(request)
    apps = catalog.app_names()
    snap = read_app(app_name)
    message = ""
    if lifted:  # after a lift: say what the ledger now says (not what the URL says)
        record = next((r for r in snap.history if r.get("release_id") == lifted), None)
        text, state = present.hold_text((record or {}).get("forensic_hold"), snap.read_at)
        if record and state == "lifted":
            message = f"{record.get('version')} ({lifted}): {text}. Recorded in the release ledger."
    if restored:  # after a restore: say what AWS now says (not what the URL says)
        row = next((a for a in present.ami_rows(snap) if a.ami == restored), None)
        if row is not None and not row.restorable:
            message = (
                f"{restored} ({row.version or 'no version'}) is back from the Recycle Bin and held: "
                f"{row.hold or 'held'}. Recorded in the release ledger."
            )
    return _render(
        "releases.html",
        status_code=status_code,
        here=here,
        airflow_root=airflow_root,
        apps=apps,
        app=snap.app,
        snap=snap,
        read_at=present.when(snap.read_at, snap.read_at),
        live=present.live_groups(snap, airflow_root),
        timeline=present.timeline(snap, airflow_root),
        drift=present.drift_rows(snap.drift, snap.read_at, airflow_root),
        amis=present.ami_rows(snap),
        preview=present.rollback_preview(snap, airflow_root),
        access=present.access_rows(snap.entry, _vault_prefix()),
        reports={
            r: present.when(rep.get("now") or rep.get("wall_clock"), snap.read_at) for r, rep in snap.reports.items()
        },
        accounts=present.account_report_rows(snap),
        may_lift=may_lift_holds(user),
        user_name=user.get_name() if hasattr(user, "get_name") else "",
        message=message,
        error=error,
        lift_href=lambda rid: f"{here}/apps/{quote(snap.app, safe='')}/holds/{quote(rid, safe='')}/lift",
        restore_href=lambda region, ami: (
            f"{here}/apps/{quote(snap.app, safe='')}/images/{quote(region, safe='')}/{quote(ami, safe='')}/restore"
        ),
        rollback_href=f"{here}/apps/{quote(snap.app, safe='')}/rollback",
        min_reason=_min_reason(),
        retention_labels=RETENTION_LABELS,
    )


def _may_act(user: Any, what: str) -> None:
    """The page's writes (lift a hold, restore an AMI) need what ami_rollback's trigger needs."""
    if not may_lift_holds(user):
        raise HTTPException(
            403,
            f"You may not {what}: it needs the permission to trigger ami_rollback. "
            "Ask somebody on call who has it, or an Airflow admin.",
        )


async def _act(request: Request, user: Any, app_name: str, action: Any, *, failed: str, back: str) -> Response:
    """Run one of the page's writes with the form's reason, as this user: its refusal in words on
    the page (400), else back to the app's page (``back``: the query that says what was done)."""
    from starlette.concurrency import run_in_threadpool

    form = await request.form()
    reason = str(form.get("reason") or "")
    who = user.get_name() if hasattr(user, "get_name") else str(user)
    try:
        done = await run_in_threadpool(action, reason, who)
    except ReleaseError as exc:
        return await run_in_threadpool(_app_page, request, app_name, user, error=f"{failed}: {exc}", status_code=400)
    log.info("Releases page: %s", done.summary())
    here, _ = _roots(request)
    return RedirectResponse(f"{here}/apps/{quote(app_name, safe='')}?{back}#holds", status_code=303)


def _vault_prefix() -> str:
    from amirelease.hooks.vault import vault_path_prefix

    return vault_path_prefix()


def _min_reason() -> int:
    from amirelease.holds import MIN_REASON_CHARS

    return MIN_REASON_CHARS


def _known_app(app: str) -> str:
    try:
        return catalog.known_app(app).name
    except ConfigError:
        raise HTTPException(404, f"There is no app '{app}' in the catalog (include/apps/).") from None


# -- the app -------------------------------------------------------------------------------------
def create_app() -> FastAPI:
    app = FastAPI(title="Releases", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        no_session = exc.status_code == 401 or exc.detail == "Invalid JWT token"
        if no_session and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            from airflow.api_fastapi.app import get_auth_manager

            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(get_auth_manager().get_url_login(next_url=target), status_code=303)
        message = exc.detail if isinstance(exc.detail, str) else "Request refused."
        if no_session:
            message = "You are not logged in to Airflow (or the session expired). Log in and try again."
        return _error_page(request, exc.status_code, message)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, user: ReaderDep) -> Response:
        here, airflow_root = _roots(request)
        apps = catalog.load_entries()
        if len(apps) == 1:
            return RedirectResponse(f"{here}/apps/{quote(next(iter(apps)), safe='')}", status_code=303)
        return _render("index.html", here=here, airflow_root=airflow_root, apps=list(apps.values()))

    @app.get("/apps/{app_name}", response_class=HTMLResponse)
    def app_page(request: Request, app_name: str, user: ReaderDep, lifted: str = "", restored: str = "") -> Response:
        return _app_page(request, _known_app(app_name), user, lifted=lifted, restored=restored)

    @app.post("/apps/{app_name}/holds/{release_id}/lift", response_class=HTMLResponse)
    async def lift(request: Request, app_name: str, release_id: str, user: UserDep) -> Response:
        from amirelease.holds import lift_hold

        _may_act(user, "lift a forensic hold")
        name = _known_app(app_name)
        return await _act(
            request,
            user,
            name,
            lambda reason, who: lift_hold(app=name, release_id=release_id, reason=reason, by=who),
            failed="Hold not lifted",
            back=f"lifted={quote(release_id, safe='')}",
        )

    @app.post("/apps/{app_name}/images/{region}/{image_id}/restore", response_class=HTMLResponse)
    async def restore(request: Request, app_name: str, region: str, image_id: str, user: UserDep) -> Response:
        """Bring a deregistered release AMI of this app back from the Recycle Bin (retention/restore.py,
        as `make restore-ami`): snapshots, then the image; held, with who and why, in the ledger."""
        from starlette.concurrency import run_in_threadpool

        from amirelease.retention.restore import restore_ami
        from amirelease.ui import present
        from amirelease.ui.collect import read_app

        _may_act(user, "restore an AMI")
        name = _known_app(app_name)
        snap = await run_in_threadpool(read_app, name)
        if not any(a.ami == image_id and a.region == region and a.restorable for a in present.ami_rows(snap)):
            return await run_in_threadpool(
                _app_page,
                request,
                name,
                user,
                error=f"Not restored: {image_id} is not one of {name}'s release AMIs in the Recycle Bin of {region}",
                status_code=404,
            )
        return await _act(
            request,
            user,
            name,
            lambda reason, who: restore_ami(image_id=image_id, region=region, reason=reason, by=who),
            failed="Not restored",
            back=f"restored={quote(image_id, safe='')}",
        )

    @app.post("/apps/{app_name}/rollback", response_class=HTMLResponse)
    async def roll_back(request: Request, app_name: str, user: UserDep) -> Response:
        """The preview's form: trigger ami_rollback with the target the person saw, as that person."""
        from starlette.concurrency import run_in_threadpool

        if not may_lift_holds(user):
            raise HTTPException(
                403,
                "You may not roll back: it needs the permission to trigger ami_rollback. "
                "Ask somebody on call who has it, or an Airflow admin.",
            )
        name = _known_app(app_name)
        form = await request.form()
        conf = {
            "app": name,
            "reason": str(form.get("reason") or ""),
            "target": str(form.get("target") or "") or None,
            "confirm_rolled_back": form.get("confirm_rolled_back") == "on",
            "forensic_hold": form.get("forensic_hold") == "on",
        }
        who = user.get_name() if hasattr(user, "get_name") else str(user)
        try:
            run_id = await run_in_threadpool(trigger_rollback, conf, who)
        except ReleaseError as exc:
            return await run_in_threadpool(
                _app_page, request, name, user, error=f"Rollback not started: {exc}", status_code=400
            )
        log.info("Releases page: %s triggered ami_rollback %s (%s)", who, run_id, conf["target"] or "empty target")
        _, airflow_root = _roots(request)
        return RedirectResponse(f"{airflow_root}/dags/{ROLLBACK_DAG}/runs/{quote(run_id, safe='')}", status_code=303)

    return app


def trigger_rollback(conf: dict[str, Any], who: str) -> str:
    """Create an ami_rollback run as Airflow's trigger endpoint does (same checks, same params);
    returns its run id. Raises ReleaseError with the reason in words."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.utils.types import DagRunTriggeredByType

    from amirelease.ui.trigger_guard import active_runs, dag_params, duplicate_words, problems, run_name

    params = dag_params(ROLLBACK_DAG)
    if params is None:
        raise ReleaseError(
            f"Airflow does not know the DAG {ROLLBACK_DAG} yet", fix="wait for the DAG processor to parse dags/"
        )
    found = problems(params, conf)
    if found:
        raise ReleaseError(" ".join(found))
    duplicate = duplicate_words(ROLLBACK_DAG, conf, active_runs(ROLLBACK_DAG))
    if duplicate:
        raise ReleaseError(duplicate)
    run_id = run_name(ROLLBACK_DAG, conf, datetime.now(UTC))
    try:
        dag_run = trigger_dag(
            ROLLBACK_DAG,
            triggered_by=DagRunTriggeredByType.UI,
            triggering_user_name=who,
            run_id=run_id,
            conf=conf,
            logical_date=None,
        )
    except DagRunAlreadyExists:
        raise ReleaseError("the same rollback was started a moment ago", fix="open its run in ami_rollback") from None
    except (DagNotFound, ValueError) as exc:
        raise ReleaseError(str(exc)) from None
    if dag_run is None:
        raise ReleaseError(f"Airflow did not create the {ROLLBACK_DAG} run")
    return str(dag_run.run_id)


app = create_app()
