"""The gate before a stage (``ami_promote``'s ``approve``): Airflow's human-in-the-loop approval.

Its own module: the standard provider's HITL operators are imported only by the DAG that has a
gate, not by every DAG file that imports the promotion's other operators."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from amirelease.alarms import ALARM_TYPES, alarm_states
from amirelease.constants import DEFAULT_AWS_CONN_ID, MAX_NOTES, TaskIds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease.handoffs import ReleasePlan

ANSWER_KEY = "answer"  # XCom of the gate: what was answered, by whom, why (record.py reads it)
REASON = Param(
    "",
    type="string",
    maxLength=MAX_NOTES,
    title="Reason",
    description="Why you approve or reject (kept in the release's ledger record)",
    source="task",
)


class StageGateOperator(ApprovalOperator):
    """
    The gate before a stage: Airflow's ``ApprovalOperator`` (the task waits in
    ``awaiting_input``: no worker slot, no lock), with the subject and body preflight wrote (the
    previous stage's verification) and the stage's plan from ``check_infrastructure``. Only who
    may edit this DAG's runs may answer (release managers and admins: access.py). The stage's
    ``approval.timeout_minutes`` bounds the wait; no answer counts as a rejection (the default
    option). A rejection skips everything up to ``record``, which records who and why.
    ``emergency`` (a rollback's re-release a release manager marked as an emergency) passes the
    gate without waiting and says so.

    ``approval.approvers`` (the app names who may answer) becomes the HITL request's
    ``assigned_users``: Airflow's API then refuses anyone else (403), on top of the role check —
    it narrows who may approve, never widens it. ``approval.soak_minutes`` first waits (deferred:
    no worker slot) until the previous stage has run the release that long, then reads its alarms'
    history: any alarm that went into ALARM (or is in ALARM, or is missing) ends the promotion as
    "soak failed", like a rejection. ``approval.automatic``: a quiet soak is the approval.
    """

    # read-only CloudWatch calls of the soak, with the workers' own AWS connection
    iam_role: ClassVar[str] = "deploy"
    iam_actions: ClassVar[tuple[str, ...]] = ("cloudwatch:DescribeAlarms", "cloudwatch:DescribeAlarmHistory")
    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote?")
        super().__init__(defaults=ApprovalOperator.REJECT, ignore_downstream_trigger_rules=True, **kwargs)
        # the form the approver fills in: only this (inside a DAG with params, Airflow's merge drops
        # a task-level Param's source, and the HITL operator keeps task-level params only)
        self.params = ParamsDict({"reason": REASON})

    def execute(self, context: Context) -> Any:
        from amirelease.handoffs import ReleasePlan
        from amirelease.operators.preflight import flag

        ti = context["ti"]
        plan = ReleasePlan.from_xcom(ti.xcom_pull(task_ids=TaskIds.PREFLIGHT))
        gate = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT, key="gate") or {}
        if flag("emergency", (context["dag_run"].conf or {}).get("emergency", False)):
            self.log.warning(
                "EMERGENCY: %s %s goes to %s without waiting for an approval (asked by %s, who may trigger "
                "ami_rollback)",
                plan.app,
                plan.version,
                plan.stage,
                plan.triggered_by or "the run's trigger",
            )
            answer: dict[str, Any] = {
                "chosen_options": [self.APPROVE],
                "params_input": {},
                "responded_by_user": None,
                "emergency": True,
            }
            ti.xcom_push(key=ANSWER_KEY, value=answer)
            return answer
        stage = plan.stage_spec
        if stage.soak_minutes:
            # the last soak_minutes of the release in the previous stage: from its verification, or
            # (a promotion asked again later) the minutes before now
            soak, now = timedelta(minutes=stage.soak_minutes), datetime.now(UTC)
            verified = _when(gate.get("verified_at")) or now
            until = max(verified + soak, now)
            since = until - soak
            if until > now:
                from airflow.providers.standard.triggers.temporal import DateTimeTrigger

                self.log.info(
                    "Soak: %s %s was verified in %s at %s; waiting until %s (a trigger: no worker slot), then "
                    "%s's alarms over the last %s decide",
                    plan.app,
                    plan.version,
                    plan.promoted_from,
                    verified.isoformat(),
                    until.isoformat(),
                    plan.promoted_from,
                    soak,
                )
                self.defer(
                    trigger=DateTimeTrigger(moment=until),
                    method_name="soak_complete",
                    kwargs={"since": since.isoformat(), "until": until.isoformat()},
                )
            return self.soak_complete(context, None, since=since.isoformat(), until=until.isoformat())
        return self._ask(context, plan, "")

    def soak_complete(self, context: Context, event: Any = None, since: str = "", until: str = "") -> Any:
        """The soak has lasted: its alarms decide, or a person is asked now."""
        from botocore.exceptions import BotoCoreError, ClientError

        from amirelease.aws import AwsClients
        from amirelease.handoffs import ReleasePlan

        ti = context["ti"]
        plan = ReleasePlan.from_xcom(ti.xcom_pull(task_ids=TaskIds.PREFLIGHT))
        stage, before = plan.stage_spec, plan.app_spec.previous_stage(plan.stage)
        assert before is not None  # a gate stands before a later stage only (catalog.py)
        alarms = list(plan.app_spec.verify_rules(before.name).get("alarms") or [])
        # the window: kwargs when called directly; after the deferral, the trigger's event is its
        # moment (`until`; Airflow's dag.test drops a deferral's kwargs when there is an event)
        now = datetime.now(UTC)
        end = min(_when(until) or _moment(event) or now, now)
        start = _when(since) or end - timedelta(minutes=stage.soak_minutes)
        clients = AwsClients(aws_conn_id=self.aws_conn_id)
        try:
            problems = soak_problems(clients.cloudwatch, alarms, before.regions, start, end)
        except (ClientError, BotoCoreError) as exc:  # what was not read is not quiet
            problems = [f"the alarms could not be read ({exc}); promote again once CloudWatch answers"]
        summary = (
            f"{before.name}'s alarms ({', '.join(alarms)}) watched for {stage.soak_minutes:g} min from "
            f"{start:%Y-%m-%d %H:%M:%S} UTC"
        )
        if problems:
            self.log.error("Soak failed: %s: %s", summary, "; ".join(problems))
            answer: dict[str, Any] = {
                "chosen_options": [self.REJECT],
                "params_input": {"reason": "; ".join(problems)[:MAX_NOTES]},
                "responded_by_user": None,
                "soak_failed": True,
            }
            ti.xcom_push(key=ANSWER_KEY, value=answer)
            # Airflow's ApprovalOperator handles a rejection: every task after the gate is skipped
            return ApprovalOperator.execute_complete(
                self,
                context,
                {
                    "chosen_options": [self.REJECT],
                    "params_input": {},
                    "responded_at": datetime.now(UTC),
                    "responded_by_user": None,
                },
            )
        self.log.info("Soak passed: %s: none went into ALARM", summary)
        if stage.automatic:
            answer = {
                "chosen_options": [self.APPROVE],
                "params_input": {"reason": f"{summary}: quiet"},
                "responded_by_user": None,
                "automatic": True,
            }
            self.log.info("Automatic gate: %s %s goes to %s without asking anyone", plan.app, plan.version, plan.stage)
            ti.xcom_push(key=ANSWER_KEY, value=answer)
            return answer
        return self._ask(context, plan, f"Soak passed: {summary}; none went into ALARM.\n\n")

    def _ask(self, context: Context, plan: ReleasePlan, soaked: str) -> Any:
        """A person answers: Airflow's HITL request (the task waits in awaiting_input), with the words
        preflight wrote (the previous stage's verification) and the stage's plan."""
        from amirelease.operators.promote import plan_text

        ti = context["ti"]
        gate = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT, key="gate") or {}
        stage = plan.stage_spec
        self.subject = str(gate.get("subject") or f"Promote {plan.app} {plan.version} to {plan.stage}?")
        self.body = (
            soaked + str(gate.get("body") or "") + plan_text(ti.xcom_pull(task_ids=TaskIds.CHECK_INFRA), plan.stage)
        )
        if stage.approvers:
            self.assigned_users = [{"id": u, "name": u} for u in stage.approvers]
        self.response_timeout = timedelta(minutes=stage.approval_minutes)
        self._tell(context, plan)
        self.log.info(
            "Waiting up to %s for %s to approve %s %s for %s (Airflow UI: Required Actions, or "
            "this task's page); no answer counts as a rejection",
            self.response_timeout,
            who_may_answer(stage.approvers),
            plan.app,
            plan.version,
            plan.stage,
        )
        return super().execute(context)

    def _tell(self, context: Context, plan: ReleasePlan) -> None:
        """The "waits for approval" notification (the app's notify: channels); never fails the gate."""
        from amirelease import notify

        ti = context["ti"]
        try:
            notify._emit(
                context,
                notify.Notice(
                    event=notify.Events.WAITING_FOR_APPROVAL,
                    app=plan.app,
                    version=plan.version,
                    kind="promotion",
                    stage=plan.stage,
                    outcome=f"verified in {plan.promoted_from}; waits for approval to go to {plan.stage}",
                    run_url=notify.run_url(ti.dag_id, ti.run_id),
                    action=(
                        f"{who_may_answer(plan.stage_spec.approvers)}: approve or reject it in the Airflow UI "
                        "(Required Actions, or the run's "
                        f"'approve' task) within {self.response_timeout}; no answer counts as a rejection"
                    ),
                    details=(f"Release id: {plan.release_id}",),
                ),
            )
        except Exception as exc:  # noqa: BLE001 - a notification never changes the gate
            self.log.warning("Waiting-for-approval notification not sent: %s", exc)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """The answer for ``record`` under its own XCom key, before Airflow's ApprovalOperator acts on
        it: a rejection skips the tasks after the gate by raising, so no return value is kept."""
        if "error" not in event:
            user = event.get("responded_by_user")
            context["ti"].xcom_push(
                key=ANSWER_KEY,
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "params_input": dict(event.get("params_input") or {}),
                    "responded_by_user": dict(user) if user else None,
                    "timedout": bool(event.get("timedout")),
                },
            )
        return super().execute_complete(context, event)


def who_may_answer(approvers: tuple[str, ...]) -> str:
    """(pure) Who the gate asks, in words."""
    if approvers:
        return f"one of {', '.join(approvers)} (named by the app; with the release-manager role)"
    return "a release manager"


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _moment(event: Any) -> datetime | None:
    """The DateTimeTrigger's event (its moment), or None if it is not a time."""
    try:
        return _when(event) if isinstance(event, datetime | str) else None
    except ValueError:
        return None


def soak_problems(
    cloudwatch: Callable[[str], Any], alarms: list[str], regions: list[str], since: datetime, until: datetime
) -> list[str]:
    """What broke the soak, in words (none: it was quiet): for each alarm in each region, every
    change into ALARM in [since, until] (DescribeAlarmHistory, every page), an alarm in ALARM now
    (it may have gone there before the window) and an alarm that does not exist (nothing watched
    is not quiet)."""
    problems: list[str] = []
    for region in regions:
        cw = cloudwatch(region)
        found = alarm_states(cw, alarms)
        for name in alarms:
            if name not in found:
                problems.append(f"alarm {name} ({region}) does not exist: nothing to watch")
                continue
            if found[name] == "ALARM":
                problems.append(f"alarm {name} ({region}) is in ALARM")
            pages = cw.get_paginator("describe_alarm_history").paginate(
                AlarmName=name,
                AlarmTypes=ALARM_TYPES,
                HistoryItemType="StateUpdate",
                StartDate=since,
                EndDate=until,
            )
            for page in pages:
                for item in page.get("AlarmHistoryItems", []):
                    if _into_alarm(item):
                        problems.append(
                            f"alarm {name} ({region}) went into ALARM at {_when(item['Timestamp']):%H:%M:%S} UTC"
                        )
    return problems


def _into_alarm(item: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(item.get("HistoryData") or "{}")["newState"]["stateValue"] == "ALARM")
    except (ValueError, KeyError, TypeError):  # no structured data: AWS's summary says it too
        return str(item.get("HistorySummary", "")).endswith(" to ALARM")
