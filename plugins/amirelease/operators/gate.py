"""The gate before a stage (``ami_promote``'s ``approve``): Airflow's human-in-the-loop approval.

Its own module: the standard provider's HITL operators are imported only by the DAG that has a
gate, not by every DAG file that imports the promotion's other operators."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from amirelease.constants import TaskIds
from amirelease.handoffs import ReleasePlan
from amirelease.operators.preflight import flag
from amirelease.operators.promote import plan_text

if TYPE_CHECKING:
    from airflow.sdk import Context


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

    def __init__(self, *, emergency: str | bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote?")
        super().__init__(defaults=ApprovalOperator.REJECT, ignore_downstream_trigger_rules=True, **kwargs)
        self.emergency = emergency
        self.template_fields = (*self.template_fields, "emergency")

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        plan = ReleasePlan.from_xcom(ti.xcom_pull(task_ids=TaskIds.PREFLIGHT))
        gate = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT, key="gate") or {}
        self.subject = str(gate.get("subject") or f"Promote {plan.app} {plan.version} to {plan.stage}?")
        self.body = str(gate.get("body") or "") + plan_text(ti.xcom_pull(task_ids=TaskIds.CHECK_INFRA), plan.stage)
        if flag("emergency", self.emergency):
            self.log.warning(
                "EMERGENCY: %s %s goes to %s without waiting for an approval (asked by %s, who may trigger "
                "ami_rollback)",
                plan.app,
                plan.version,
                plan.stage,
                plan.triggered_by or "the run's trigger",
            )
            return {"chosen_options": [self.APPROVE], "params_input": {}, "responded_by_user": None, "emergency": True}
        self.response_timeout = timedelta(minutes=plan.stage_spec.approval_minutes)
        self.log.info(
            "Waiting up to %s for a release manager to approve %s %s for %s (Airflow UI: Required Actions, or "
            "this task's page); no answer counts as a rejection",
            self.response_timeout,
            plan.app,
            plan.version,
            plan.stage,
        )
        return super().execute(context)
