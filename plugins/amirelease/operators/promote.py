"""Stages: a verified release promoted to the app's next stage (``ami_promote``), behind a gate.

One bake per release: ``ami_release`` (or a rollback's re-release) bakes, smoke-tests and
releases to the app's first stage. Each later stage is its own ``ami_promote`` run, started by
the previous stage's ``next_stage`` task once that stage verified:

``preflight`` (this module: the release's record, verified in the previous stage, its AMIs) →
``check_infrastructure`` (the stage's Terraform plan with the release's AMI, read-only) →
``approve`` (Airflow's HITL ``ApprovalOperator``: waits in ``awaiting_input`` without a worker
slot or the app's lock; no answer in time counts as a rejection) → ``release_lock`` (which
re-checks under the lock that the promotion still makes sense, ``promotion_refusal``) →
``apply_infrastructure`` → ``roll_out`` → ``wait_for_refresh`` → ``verify`` → ``record`` (the
stage's entry in the release's ledger record) → ``roll_forward`` and ``next_stage``.

The gate waits outside the lock, so a pending approval never holds up a rollback or another
release; the decision is made again once the lock is held (a newer release verified in the
previous stage meanwhile, or this one rolled back, refuses the promotion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk import BaseOperator

from amirelease.constants import SOAK_BY, DagIds, TaskIds
from amirelease.errors import PreflightError
from amirelease.operators.base import ReleaseOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease.handoffs import ReleasePlan
    from amirelease.ledger import Record

SUCCEEDED = "succeeded"
APPROVE, REJECT = "Approve", "Reject"  # ApprovalOperator's options (gate.py)


def stage_entry(record: Record | None, stage: str) -> dict[str, Any]:
    """(pure) A release's entry for one stage ({} when it never ran there)."""
    entry: dict[str, Any] = ((record or {}).get("stages") or {}).get(stage) or {}
    return entry


def promotion_refusal(history: list[Record], record: Record | None, stage: str, previous: str) -> str | None:
    """(pure) Why ``record``'s release may not be promoted to ``stage`` now, in words; None when it may.

    It must have been verified in ``previous``, not rolled back, not be in ``stage`` already,
    and no newer release may have been verified in ``previous`` since (promote that one)."""
    if record is None:
        return "the ledger has no record of that release"
    name = f"{record.get('version')} ({record.get('release_id')})"
    if record.get("rolled_back"):
        return f"{name} was rolled back ({(record['rolled_back'] or {}).get('reason', '')}); it is not promoted"
    before = stage_entry(record, previous)
    if before.get("outcome") != SUCCEEDED:
        return f"{name} was not verified in {previous} ({before.get('outcome') or 'it never ran there'})"
    there = stage_entry(record, stage)
    if there.get("outcome") == SUCCEEDED:
        return f"{name} was already promoted to {stage} (run {there.get('run_id')})"
    verified_at = str(before.get("finished_at") or "")
    newer = [
        r
        for r in history
        if r.get("release_id") != record.get("release_id")
        and stage_entry(r, previous).get("outcome") == SUCCEEDED
        and str(stage_entry(r, previous).get("finished_at") or "") > verified_at
    ]
    if newer:
        last = max(newer, key=lambda r: str(stage_entry(r, previous).get("finished_at") or ""))
        return (
            f"a newer release, {last.get('version')} ({last.get('release_id')}), was verified in {previous} since "
            f"{name} was; promote that one"
        )
    return None


def refusal_fix(stage: str) -> str:
    return (
        f"nothing was changed in {stage}. Release the version again (ami_release) or promote the release the "
        "message names (ami_promote with its release id)"
    )


def gate_text(record: Record, previous: str, stage: str, app: str) -> tuple[str, str]:
    """(pure) The approval's subject and body: what was verified where, and what happens next."""
    subject = f"Promote {app} {record.get('version')} to {stage}?"
    before = stage_entry(record, previous)
    lines = [
        f"**{app} {record.get('version')}** (release `{record.get('release_id')}`) was verified in "
        f"**{previous}** at {before.get('finished_at')} by run `{before.get('run_id')}`.",
        "",
        f"Approving applies its Terraform definition in **{stage}** with the same AMI "
        f"({', '.join(f'{r}: {a}' for r, a in sorted((record.get('amis') or {}).items()))}) and refreshes "
        "its groups; rejecting (or no answer in time) leaves it as it is.",
        "",
        f"### Verified in {previous}",
    ]
    verification = before.get("verification") or {}
    for g in verification.get("groups") or []:
        alarms = ", ".join(f"{k} {v}" for k, v in sorted((g.get("alarms") or {}).items())) or "none"
        lines.append(
            f"- {g.get('auto_scaling_group')} ({g.get('region')}): {g.get('on_new_ami')}/{g.get('in_service')} "
            f"in service on {g.get('ami_id')}, "
            f"targets {'healthy' if g.get('target_groups_healthy') else 'NOT healthy'}, alarms: {alarms}"
        )
    for w in verification.get("warnings") or []:
        lines.append(f"- warning: {w}")
    return subject, "\n".join(lines)


def plan_text(check: dict[str, Any] | None, stage: str) -> str:
    """(pure) The next stage's Terraform plan (check_infrastructure's XCom) for the approval body."""
    if not check:
        return f"\n### Terraform plan for {stage}\n(no plan: check_infrastructure did not run)"
    lines = [f"\n### Terraform plan for {stage} (Terraform {check.get('terraform_version')})"]
    for r in check.get("regions") or []:
        p = r.get("plan") or {}
        lines.append(
            f"- {r.get('region')} (state `{r.get('state_key')}`): {p.get('add')} to add, {p.get('change')} to change,"
            f" {p.get('destroy')} to destroy"
        )
        for c in p.get("changes") or []:
            if c.get("action") not in ("noop", "read"):
                lines.append(f"  - {c.get('action')} {c.get('address')}")
    return "\n".join(lines)


class PromotePreflightOperator(ReleaseOperatorMixin, AwsBaseOperator[S3Hook]):
    """
    Check a promotion before anything else: the release's ledger record, its stage entries and
    its AMIs. Hands on the release's own plan (recorded when it was released, for this stage)
    and its bake result (XCom ``bake``), so the stage's tasks act on exactly what was verified
    before. Changes nothing.
    """

    aws_hook_class = S3Hook
    template_fields: Sequence[str] = aws_template_fields("app", "release_id", "stage", "triggered_by")
    ui_color = "#e8f4fd"
    iam_actions = ("ec2:DescribeImages", "s3:GetObject", "s3:ListBucket")

    def __init__(self, *, app: str, release_id: str, stage: str, triggered_by: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app, self.release_id, self.stage, self.triggered_by = app, release_id, stage, triggered_by

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease.handoffs import BakeResult, ReleasePlan
        from amirelease.ledger import Ledger, ledger_bucket, record_of
        from amirelease.operators.preflight import text_param

        app = text_param("app", self.app, example="demo-web")
        release_id = text_param("release_id", self.release_id, example="demo-web-1.4.2-20261205t101500z").strip()
        stage = text_param("stage", self.stage, example="production").strip()
        history = Ledger(self.clients.s3(), ledger_bucket()).history(app)  # read once: the record is in it
        record = record_of(history, release_id)
        if record is None or not record.get("plan"):
            raise PreflightError(
                f"{app} has no staged release {release_id or '(empty)'} in the ledger",
                fix="give the release id the Releases page shows for a release verified in the previous stage",
            )
        plan = ReleasePlan.from_xcom(record["plan"])
        spec = plan.app_spec
        target = spec.stage(stage)
        previous = spec.previous_stage(stage)
        if previous is None:
            raise PreflightError(
                f"{stage} is {app}'s first stage: a release reaches it through ami_release, not a promotion",
                fix="promote to a later stage, or release the version with ami_release",
            )
        why = promotion_refusal(history, record, target.name, previous.name)
        if why:
            raise PreflightError(f"{app} cannot be promoted to {target.name}: {why}", fix=refusal_fix(target.name))
        amis = dict(record.get("amis") or {})
        for region in target.regions:
            ami = amis.get(region)
            found = self.clients.ec2(region).describe_images(ImageIds=[ami]).get("Images", []) if ami else []
            if not found or found[0].get("State") != "available":
                raise PreflightError(
                    f"the AMI of {record.get('version')} in {region} ({ami or 'none recorded'}) is not available",
                    fix="release the version again (ami_release with rebuild) to bake a new AMI",
                )
        bake = BakeResult(
            release_id=release_id,
            ami_id=amis[spec.home_region],
            amis=amis,
            source_ami=str(record.get("source_ami") or plan.source_ami),
            reused=True,
            provisioned=bool((record.get("bake") or {}).get("provisioned")),
        )
        context["ti"].xcom_push(key="bake", value=bake.to_xcom())
        subject, body = gate_text(record, previous.name, target.name, app)
        verified_at = stage_entry(record, previous.name).get("finished_at")  # the soak counts from here
        context["ti"].xcom_push(key="gate", value={"subject": subject, "body": body, "verified_at": verified_at})
        self.log.info(
            "Promotion of %s %s (%s) from %s to %s: verified there, AMIs %s available; the gate comes next",
            app,
            plan.version,
            release_id,
            previous.name,
            target.name,
            ", ".join(f"{r}={a}" for r, a in sorted(amis.items())),
        )
        staged = ReleasePlan.from_xcom(
            {**plan.to_xcom(), "stage": target.name, "promoted_from": previous.name, "triggered_by": self.triggered_by}
        )
        return staged.to_xcom()


def gate_answer(raw: Any) -> tuple[str, str | None, str]:
    """(pure) What the gate's XCom says: ('approved' | 'rejected' | 'timed out' | 'unanswered', who, why)."""
    if not isinstance(raw, dict):
        return "unanswered", None, ""
    chosen = list(raw.get("chosen_options") or [])
    user = raw.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") if isinstance(user, dict) else None
    why = str((raw.get("params_input") or {}).get("reason") or "")
    if raw.get("emergency"):
        return "approved", "emergency (no gate)", why
    if raw.get("soak_failed"):
        return "soak failed", SOAK_BY, why
    if raw.get("automatic"):
        return "approved", SOAK_BY, why
    if chosen == [APPROVE]:
        return "approved", who, why
    if chosen == [REJECT]:
        if raw.get("timedout") or not who:
            return "timed out", None, "no answer before the gate's timeout"
        return "rejected", who, why
    return "unanswered", None, ""


def next_stage_conf(plan: ReleasePlan, emergency: bool, until: str = "") -> dict[str, Any] | None:
    """(pure) The ami_promote conf for the stage after ``plan``'s, or None after the last one or
    after ``until`` (an automatic rollback re-releases up to the stage that failed, no further)."""
    if until and plan.stage_spec.name == until:
        return None
    nxt = plan.app_spec.next_stage(plan.stage)
    if nxt is None:
        return None
    conf: dict[str, Any] = {"app": plan.app, "release_id": plan.release_id, "stage": nxt.name, "emergency": emergency}
    if until:
        conf["until_stage"] = until
    return conf


def next_stage_decision(
    plan: ReleasePlan | None, outcome: Mapping[str, Any] | None, params: Mapping[str, Any]
) -> tuple[str | None, dict[str, Any] | None]:
    """(pure) (why no next stage is started, None), or (None, the next stage's ami_promote conf).
    ``params``: the run's (ami_rollback's and ami_promote's have ``until_stage`` and ``emergency``)."""
    from amirelease.operators.preflight import flag

    if plan is None:
        return "preflight produced no plan", None
    if not plan.app_spec.staged:
        return f"{plan.app} has no stages", None
    result = (outcome or {}).get("outcome")
    if result != SUCCEEDED:
        return (
            f"{plan.app} {plan.version} did not succeed in {plan.stage_spec.name} ({result or 'no outcome recorded'})"
        ), None
    until = str(params.get("until_stage") or "")
    conf = next_stage_conf(plan, flag("emergency", params.get("emergency", False)), until)
    if conf is None:
        last = f"the stage this run was asked to go up to ({until})" if until else f"{plan.app}'s last stage"
        return f"{plan.stage_spec.name} is {last}", None
    return None, conf


class NextStageOperator(BaseOperator):
    """After ``record``: a stage that succeeded starts the ``ami_promote`` run of the app's next
    stage (its gate waits there); otherwise, or after the last stage, it skips saying why.
    The run id is derived from the release and the stage, so a retry never starts a second one."""

    ui_color = "#e8f4fd"

    def execute(self, context: Context) -> None:
        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
        from airflow.sdk.exceptions import AirflowSkipException

        from amirelease.handoffs import ReleasePlan

        ti = context["ti"]
        outcome = ti.xcom_pull(task_ids=TaskIds.RECORD, key="outcome")
        raw = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT)
        plan = ReleasePlan.from_xcom(raw) if raw else None
        why_not, conf = next_stage_decision(plan, outcome, context["params"])
        if why_not:
            raise AirflowSkipException(f"No next stage: {why_not}")
        assert plan is not None and conf is not None  # next_stage_decision said so
        run_id = f"promote_{plan.app}__{plan.release_id}__{conf['stage']}"
        self.log.info(
            "%s %s verified in %s: starting %s %s (its gate waits for an approval%s)",
            plan.app,
            plan.version,
            plan.stage_spec.name,
            DagIds.PROMOTE,
            run_id,
            "; EMERGENCY: passed without waiting" if conf["emergency"] else "",
        )
        TriggerDagRunOperator(
            task_id=self.task_id,
            trigger_dag_id=DagIds.PROMOTE,
            trigger_run_id=run_id,
            conf=conf,
            skip_when_already_exists=True,
        ).execute(context)
