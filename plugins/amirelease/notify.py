"""Notifications: what happened to a release (or an app's fleet), told to the people who act on it.

Events are sent through Airflow notifiers (the Amazon provider's ``SnsNotifier`` by default),
configured per app in the central catalog (``notify:`` in include/apps/<app>.yaml, not the
release bundle's copy: who is told is about today, not about the release's inputs). The
release DAGs call them from task callbacks (pipeline.py): ``preflight`` tells "started" (or
"failed" when it refused the release), ``record`` tells the outcome it recorded. ``ami_drift``
tells "drift found". "waiting for approval" and "automatic rollback started" are named here for
the stages work (issue 20) to emit.

A notifier that fails (topic missing, no permission) never fails the task or the release: it
is logged as a warning. Messages carry only what the ledger carries (the failure reason is
already redacted by callbacks.remember_failure); they are not rendered as Jinja templates
(a failure reason could contain ``{{``), so the notifier's ``notify`` is called directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from amirelease.constants import DEFAULT_AWS_CONN_ID, NOT_PROMOTED, DagIds

log = logging.getLogger(__name__)


class Events:
    RELEASE_STARTED = "release_started"
    RELEASE_SUCCEEDED = "release_succeeded"
    RELEASE_FAILED = "release_failed"
    DRIFT_FOUND = "drift_found"
    # emitted by the stages work (issue 20, items 1-3), named now so catalogs can subscribe
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    ROLLBACK_STARTED = "automatic_rollback_started"
    NOT_PROMOTED = "promotion_not_approved"  # a stage's gate was rejected or timed out

    ALL = (
        RELEASE_STARTED,
        RELEASE_SUCCEEDED,
        RELEASE_FAILED,
        DRIFT_FOUND,
        WAITING_FOR_APPROVAL,
        ROLLBACK_STARTED,
        NOT_PROMOTED,
    )


SUBJECT_MAX = 100  # SNS: at most 100 printable ASCII characters, no line breaks


@dataclass(frozen=True)
class Notice:
    """One event about one app, as a person reads it (pure)."""

    event: str
    app: str
    version: str = ""
    outcome: str = ""
    reason: str = ""  # the failure reason in words (already redacted)
    run_url: str = ""
    ask: str = ""  # who is asked to act (catalog notify.ask, else the app's owner)
    action: str = ""  # what they are asked to do
    stage: str | None = None  # the stages work fills it
    details: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "release"  # release / rollback / rebuild / drift

    def subject(self) -> str:
        what = {
            Events.RELEASE_STARTED: "started",
            Events.RELEASE_SUCCEEDED: "SUCCEEDED",
            Events.RELEASE_FAILED: "FAILED",
            Events.DRIFT_FOUND: "drift found",
            Events.WAITING_FOR_APPROVAL: "waits for approval",
            Events.ROLLBACK_STARTED: "automatic rollback started",
            Events.NOT_PROMOTED: "not promoted",
        }.get(self.event, self.event)
        noun = "Drift" if self.event == Events.DRIFT_FOUND else self.kind.capitalize()
        text = f"{noun} {self.app} {self.version}".strip() + (f" [{self.stage}]" if self.stage else "") + f": {what}"
        if self.event == Events.DRIFT_FOUND:
            text = f"{self.app}: drift found" + (f" [{self.stage}]" if self.stage else "")
        ascii_only = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
        return ascii_only[:SUBJECT_MAX]

    def body(self) -> str:
        lines = [self.subject(), ""]
        lines.append(f"App: {self.app}")
        if self.version:
            lines.append(f"Version: {self.version}")
        if self.stage:
            lines.append(f"Stage: {self.stage}")
        if self.outcome:
            lines.append(f"Outcome: {self.outcome}")
        if self.reason:
            lines.append(f"Why: {self.reason}")
        lines.extend(self.details)
        if self.ask or self.action:
            lines.append("")
            lines.append(f"Asked to act: {self.ask or 'the app owner'}" + (f" - {self.action}" if self.action else ""))
        if self.run_url:
            lines.append(f"Run: {self.run_url}")
        return "\n".join(lines) + "\n"


# --- configuration (the central catalog) ------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    kind: str  # sns (more: see docs/notifications.md)
    settings: dict[str, Any]
    events: tuple[str, ...]


@dataclass(frozen=True)
class NotifySettings:
    ask: str
    channels: tuple[Channel, ...]


def settings_of(document: dict[str, Any], owner: str = "") -> NotifySettings:
    """The app's ``notify:`` block (already validated by the catalog schema) as plain data."""
    block = document.get("notify") or {}
    default_events = tuple(block.get("events") or Events.ALL)
    channels = []
    for item in block.get("channels") or []:
        kind = next(k for k in item if k != "events")
        channels.append(
            Channel(kind=kind, settings=dict(item[kind]), events=tuple(item.get("events") or default_events))
        )
    return NotifySettings(ask=str(block.get("ask") or owner or ""), channels=tuple(channels))


def sns_notifier(settings: dict[str, Any], notice: Notice, aws_conn_id: str | None) -> Any:
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    arn = str(settings["topic_arn"])
    return SnsNotifier(
        aws_conn_id=aws_conn_id,
        target_arn=arn,
        subject=notice.subject(),
        message=notice.body(),
        message_attributes={"event": notice.event, "app": notice.app},
        region_name=settings.get("region") or arn.split(":")[3],
    )


# A new kind of channel: one function here building the provider's notifier (docs/notifications.md).
NOTIFIERS: dict[str, Callable[[dict[str, Any], Notice, str | None], Any]] = {"sns": sns_notifier}


def send(notice: Notice, settings: NotifySettings, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> list[str]:
    """Send to every channel that wants this event; return what was sent or failed, in words.
    Never raises: a notifier that fails is a warning (the release is not the notifier's)."""
    done = []
    for channel in settings.channels:
        if notice.event not in channel.events:
            continue
        where = f"{channel.kind} {next(iter(channel.settings.values()), '')}".strip()
        try:
            build = NOTIFIERS[channel.kind]
            build(channel.settings, notice, aws_conn_id).notify({})
        except Exception as exc:  # noqa: BLE001 - any notifier failure is a warning, never the release's failure
            log.warning("Notification %s for %s not sent to %s: %s", notice.event, notice.app, where, _short(exc))
            done.append(f"not sent to {where}: {_short(exc)}")
            continue
        log.info("Notification %s for %s sent to %s", notice.event, notice.app, where)
        done.append(f"sent to {where}")
    return done


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def settings_for_app(app: str) -> NotifySettings | None:
    """The app's notification settings from the central catalog, or None (unknown app, bad file)."""
    from amirelease import catalog
    from amirelease.errors import ReleaseError

    try:
        entry = catalog.known_app(app)
    except (ReleaseError, OSError, ValueError) as exc:
        log.info("No notifications for %r: %s", app, exc)
        return None
    return settings_of(entry.document, entry.owner)


def run_url(dag_id: str, run_id: str) -> str:
    """The run's page in Airflow's UI ([api] base_url)."""
    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


# --- the release DAGs' callbacks (pipeline.py attaches them) -----------------------------------


def _conf(context: Any) -> dict[str, Any]:
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    return conf if isinstance(conf, dict) else {}


def _kind(dag_id: str, plan: dict[str, Any] | None) -> str:
    if dag_id == DagIds.ROLLBACK or (plan or {}).get("re_release_of"):
        return "rollback"
    if (plan or {}).get("rebuild_of"):
        return "rebuild"
    return "release"


def _aws_conn_id(context: Any) -> str | None:
    task = context.get("task")
    conn = getattr(task, "aws_conn_id", DEFAULT_AWS_CONN_ID)
    return conn if conn is None or isinstance(conn, str) else DEFAULT_AWS_CONN_ID


def _emit(context: Any, notice: Notice) -> None:
    settings = settings_for_app(notice.app)
    if settings is None or not settings.channels:
        return
    send(replace(notice, ask=notice.ask or settings.ask), settings, _aws_conn_id(context))


def release_started(context: Any) -> None:
    """preflight's on_success_callback: the release passed its checks and goes on."""
    try:
        ti = context["ti"]
        plan = ti.xcom_pull(task_ids=ti.task_id) or {}
        app, version = str(plan.get("app") or _conf(context).get("app") or ""), str(plan.get("version") or "")
        if not app:
            return
        kind = _kind(ti.dag_id, plan)
        _emit(
            context,
            Notice(
                event=Events.RELEASE_STARTED,
                app=app,
                version=version,
                kind=kind,
                outcome="running: inputs checked; waits for the app's release lock, then bakes and rolls out",
                run_url=run_url(ti.dag_id, ti.run_id),
                action="nothing yet; you will hear when it has succeeded or failed",
                details=(f"Triggered by: {plan.get('triggered_by') or '-'}",),
            ),
        )
    except Exception as exc:  # noqa: BLE001 - a callback never changes the task's outcome
        log.warning("Release-started notification not sent: %s", _short(exc))


def release_refused(context: Any) -> None:
    """preflight's on_failure_callback: the release was refused before anything was built."""
    try:
        ti = context["ti"]
        conf = _conf(context)
        app = conf.get("app")
        if not isinstance(app, str) or not app:
            return
        exc = context.get("exception")
        from airflow.sdk.log import redact  # type: ignore[attr-defined]

        reason = str(redact(f"{type(exc).__name__}: {exc}"))[:2000] if exc is not None else "see the preflight log"
        _emit(
            context,
            Notice(
                event=Events.RELEASE_FAILED,
                app=app,
                version=str(conf.get("version") or ""),
                kind="rollback" if ti.dag_id == DagIds.ROLLBACK else "release",
                outcome=f"failed at '{ti.task_id}': refused before anything was built or changed",
                reason=reason,
                run_url=run_url(ti.dag_id, ti.run_id),
                action="fix what the reason names and trigger the release again",
            ),
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("Release-failed notification not sent: %s", _short(exc))


def outcome_notice(outcome: dict[str, Any], dag_id: str, run_id: str) -> Notice:
    """The notice for what ``record`` recorded (pure; ``outcome``: record's 'outcome' XCom)."""
    succeeded = outcome.get("outcome") == "succeeded"
    failed_task = outcome.get("failed_task")
    stage = str(outcome.get("stage") or "") or None
    event = Events.RELEASE_SUCCEEDED if succeeded else Events.RELEASE_FAILED
    if outcome.get("outcome") in NOT_PROMOTED:
        event = Events.NOT_PROMOTED
        status = f"{outcome['outcome']} at the gate before {stage}: nothing was changed there"
        action = (
            "nothing, if that was meant; the earlier stages keep running this release. To promote it after all, "
            f"trigger ami_promote with release id {outcome.get('release_id')} and stage {stage}"
        )
    elif succeeded:
        status = "succeeded: every instance runs the new AMI and is healthy"
        action = "nothing; watch the app's dashboards"
    elif outcome.get("refused"):
        status = f"failed at '{failed_task}': refused before anything reached the fleet (nothing kept)"
        action = "fix what the reason names and trigger the release again"
    else:
        status = f"failed at '{failed_task}'"
        action = (
            "read the reason and the run's log; the fleet stands as the failed step left it. Release a fixed "
            "version, or trigger ami_rollback for the app to re-release the last good release"
        )
    details = []
    if outcome.get("release_id"):
        details.append(f"Release id: {outcome['release_id']}")
    for region, ami in sorted((outcome.get("amis") or {}).items()):
        details.append(f"AMI ({region}): {ami}")
    return Notice(
        event=event,
        app=str(outcome.get("app") or ""),
        version=str(outcome.get("version") or ""),
        kind=str(outcome.get("kind") or "release"),
        stage=stage,
        outcome=status,
        reason="" if succeeded else str(outcome.get("reason") or "see the failed task's log"),
        run_url=run_url(dag_id, run_id),
        action=action,
        details=tuple(details),
    )


def release_outcome(context: Any) -> None:
    """record's on_success_callback: tell what record recorded (its XCom 'outcome')."""
    try:
        ti = context["ti"]
        outcome = ti.xcom_pull(task_ids=ti.task_id, key="outcome")
        if not outcome or not outcome.get("app"):
            return
        _emit(context, outcome_notice(outcome, ti.dag_id, ti.run_id))
    except Exception as exc:  # noqa: BLE001
        log.warning("Release-outcome notification not sent: %s", _short(exc))


def record_failed(context: Any) -> None:
    """record's on_failure_callback: the outcome could not be recorded; say so."""
    try:
        ti = context["ti"]
        plan = ti.xcom_pull(task_ids="preflight") or {}
        app = str(plan.get("app") or _conf(context).get("app") or "")
        if not app:
            return
        exc = context.get("exception")
        from airflow.sdk.log import redact  # type: ignore[attr-defined]

        _emit(
            context,
            Notice(
                event=Events.RELEASE_FAILED,
                app=app,
                version=str(plan.get("version") or ""),
                kind=_kind(ti.dag_id, plan),
                outcome="unknown: the record step failed, so the outcome is not in the ledger and the app's lock "
                "may still be held",
                reason=str(redact(f"{type(exc).__name__}: {exc}"))[:2000] if exc is not None else "",
                run_url=run_url(ti.dag_id, ti.run_id),
                action="clear the 'record' task of this run once the cause is fixed (it is safe to repeat)",
            ),
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("Record-failed notification not sent: %s", _short(exc))
