"""The gate before a stage (``ami_promote``'s ``approve``): Airflow's human-in-the-loop approval.

Its own module: the standard provider's HITL operators are imported only by the DAG that has a
gate, not by every DAG file that imports the promotion's other operators."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from amirelease.constants import MAX_NOTES, TaskIds

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
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote?")
        super().__init__(defaults=ApprovalOperator.REJECT, ignore_downstream_trigger_rules=True, **kwargs)
        # the form the approver fills in: only this (inside a DAG with params, Airflow's merge drops
        # a task-level Param's source, and the HITL operator keeps task-level params only)
        self.params = ParamsDict({"reason": REASON})

    def execute(self, context: Context) -> Any:
        from amirelease.handoffs import ReleasePlan
        from amirelease.operators.preflight import flag
        from amirelease.operators.promote import plan_text

        ti = context["ti"]
        plan = ReleasePlan.from_xcom(ti.xcom_pull(task_ids=TaskIds.PREFLIGHT))
        gate = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT, key="gate") or {}
        self.subject = str(gate.get("subject") or f"Promote {plan.app} {plan.version} to {plan.stage}?")
        self.body = str(gate.get("body") or "") + plan_text(ti.xcom_pull(task_ids=TaskIds.CHECK_INFRA), plan.stage)
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
        self.response_timeout = timedelta(minutes=plan.stage_spec.approval_minutes)
        self._tell(context, plan)
        self.log.info(
            "Waiting up to %s for a release manager to approve %s %s for %s (Airflow UI: Required Actions, or "
            "this task's page); no answer counts as a rejection",
            self.response_timeout,
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
                        f"a release manager: approve or reject it in the Airflow UI (Required Actions, or the run's "
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
