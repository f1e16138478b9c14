"""Record: the release's outcome on the AMI (tags) and in the ledger (S3), then the app's
lock is released. The pipeline's teardown: it runs whatever happened after preflight, and the
DAG run's state is the release's (its own success does not hide a failed release)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.bases.skipmixin import SkipMixin  # what Airflow's branch operators use (after the operator)

from amirelease.constants import NOT_PROMOTED, TAG_FAILED_TASK, TAG_OUTCOME_AT, TAG_STATUS, TaskIds
from amirelease.errors import ConfigError
from amirelease.operators.base import Ec2ClientHookMixin, ReleaseOperatorMixin, tag_list

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease.handoffs import (
        BakeResult,
        InfrastructureCheck,
        InfrastructureResult,
        RefreshHandle,
        ReleasePlan,
        SmokeResult,
        VerifySummary,
    )
    from amirelease.ledger import Record

FAILED_STATES = ("failed", "upstream_failed")
# tasks after the lock that re-check what was decided before it: a refusal there (a typed
# PreflightError/ConfigError, raised before they change anything) is a refusal like preflight's
RECHECK_TASK_IDS = (TaskIds.LOCK, TaskIds.MARK_ROLLED_BACK)
REFUSAL_ERRORS = ("PreflightError:", "ConfigError:")
# AWS throttled or erred past every retry: not a refusal of the release's inputs, a failed attempt
# (recorded, so the Releases page shows it)
PUSHBACK_ERROR = "AwsPushbackError:"


def refused(failed_task: str | None, reason: object, before_lock: set[str]) -> bool:
    """Was the release refused before anything was built or changed? (pure)"""
    if str(reason or "").startswith(PUSHBACK_ERROR):
        return False
    if failed_task in before_lock:
        return True
    return failed_task in RECHECK_TASK_IDS and str(reason or "").startswith(REFUSAL_ERRORS)


def _by_task(states: dict[str, str | None], order: list[str]) -> dict[str, list[str | None]]:
    """Group states by task id; mapped task instances come keyed '<task_id>_<map_index>'."""
    out: dict[str, list[str | None]] = {}
    for key, state in states.items():
        task_id = key
        if key not in order:
            base, _, idx = key.rpartition("_")
            if idx.isdigit() and base in order:
                task_id = base
        out.setdefault(task_id, []).append(state)
    return out


def outcome_of(states: dict[str, str | None], order: list[str]) -> tuple[str, str | None]:
    """('succeeded', None) or ('failed', first failed task in pipeline order). Pure."""
    grouped = _by_task(states, order)
    for task_id in order:
        if "failed" in grouped.get(task_id, []):
            return "failed", task_id
    for task_id, task_states in grouped.items():  # tasks before the pipeline (e.g. a rollback's)
        if task_id not in order and "failed" in task_states:
            return "failed", task_id
    for task_id in order:
        if any(s in FAILED_STATES for s in grouped.get(task_id, [])):
            return "failed", task_id
    return "succeeded", None


def build_record(
    *,
    dag_id: str,
    run_id: str,
    plan: ReleasePlan,
    bake: BakeResult | None,
    check: InfrastructureCheck | None,
    infrastructure: InfrastructureResult | None,
    smoke: SmokeResult | None,
    rollout: list[RefreshHandle],
    verify: VerifySummary | None,
    outcome: str,
    failed_task: str | None,
    reason: str | None,
    started_at: str | None,
    phases: list[dict[str, Any]] | None = None,
) -> Record:
    """The ledger document (pure). Only non-secret inputs: plan, AWS ids, results."""
    from amirelease.ledger import utcnow

    app = plan.app_spec
    return {
        "app": plan.app,
        "version": plan.version,
        "release_id": plan.release_id,
        "kind": "re-release" if plan.re_release_of else "rebuild" if plan.rebuild_of else "release",
        "re_release_of": plan.re_release_of,
        "rebuild_of": plan.rebuild_of,
        "rebuild_reason": plan.rebuild_reason,
        "outcome": outcome,
        "failed_task": failed_task,
        "failure_reason": reason,
        "amis": dict(bake.amis) if bake else {},
        "source_ami": plan.source_ami,
        "source_ami_name": plan.source_ami_name,
        "platform": plan.platform,
        "toolchain": plan.toolchain,
        "run_list": list(plan.run_list),
        "cookbook_versions": plan.cookbook_versions,
        "packer_template_digest": plan.packer_template_digest,
        "bundle": plan.bundle.to_xcom(),
        "source_bundle": (
            {"release_id": plan.re_release_of, **plan.source_bundle.to_xcom()} if plan.source_bundle else None
        ),
        "git_ref": plan.git_ref,
        "source": plan.source,
        "targets": [t.__dict__ for t in app.targets],  # every stage's groups
        "infrastructure": {
            "module": app.infrastructure.module,
            "check": check.to_xcom() if check else None,
            "applied": infrastructure.to_xcom()["regions"] if infrastructure else [],
        },
        "launch_template_versions": [
            {
                "region": r.region,
                "auto_scaling_group": r.auto_scaling_group,
                "launch_template_id": r.launch_template_id,
                "launch_template_version": r.launch_template_version,
            }
            for r in rollout
        ],
        "refreshes": [
            {"region": r.region, "auto_scaling_group": r.auto_scaling_group, "refresh_id": r.refresh_id}
            for r in rollout
        ],
        "smoke_test": smoke.to_xcom() if smoke else None,
        "verification": verify.to_xcom() if verify else None,
        "triggered_by": plan.triggered_by,
        "reason": plan.notes,
        "dag_id": dag_id,
        "pipeline_run": run_id,
        "started_at": started_at,
        "finished_at": utcnow(),
        "phases": phases or [],  # how long each step took (phases.py)
        "forensic_hold": None,
        "rolled_back": None,
        **(
            {  # a staged app: ami_promote runs the later stages from the same plan and AMIs
                "plan": plan.to_xcom(),
                "bake": bake.to_xcom() if bake else None,
                "stages": {
                    plan.stage_spec.name: stage_record(
                        dag_id=dag_id,
                        run_id=run_id,
                        plan=plan,
                        infrastructure=infrastructure,
                        rollout=rollout,
                        verify=verify,
                        outcome=outcome,
                        failed_task=failed_task,
                        reason=reason,
                        started_at=started_at,
                        phases=phases,
                    )
                },
            }
            if app.staged
            else {}
        ),
    }


def stage_record(
    *,
    dag_id: str,
    run_id: str,
    plan: ReleasePlan,
    infrastructure: InfrastructureResult | None,
    rollout: list[RefreshHandle],
    verify: VerifySummary | None,
    outcome: str,
    failed_task: str | None,
    reason: str | None,
    started_at: str | None,
    gate: dict[str, Any] | None = None,
    phases: list[dict[str, Any]] | None = None,
) -> Record:
    """(pure) A staged release's entry for one stage: what ran there, how it ended, who let it in."""
    from amirelease.ledger import utcnow

    return {
        "stage": plan.stage_spec.name,
        "outcome": outcome,
        "failed_task": failed_task,
        "failure_reason": reason,
        "targets": [t.__dict__ for t in plan.targets],
        "applied": infrastructure.to_xcom()["regions"] if infrastructure else [],
        "refreshes": [
            {"region": r.region, "auto_scaling_group": r.auto_scaling_group, "refresh_id": r.refresh_id}
            for r in rollout
        ],
        "verification": verify.to_xcom() if verify else None,
        "gate": gate,
        "triggered_by": plan.triggered_by,
        "dag_id": dag_id,
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": utcnow(),
        "phases": phases or [],
    }


class RecordReleaseOperator(Ec2ClientHookMixin, ReleaseOperatorMixin, AwsBaseOperator[EC2Hook], SkipMixin):
    """
    Record what happened: tag the AMI with the outcome (ReleaseStatus released/failed), write
    the ledger record (plan, bundle, Terraform plan summaries, AMIs, refreshes, smoke and
    verification results, the failed task and its error), release the app's lock.

    The pipeline's teardown task: it runs after preflight succeeded, whatever happened later,
    and it succeeds when it has recorded the release, failed or not (the DAG run's state
    comes from the release's own tasks).

    :param task_order: the pipeline's task ids in order (the first failed one is "the" failure).
    """

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields()
    ui_color = "#f0f0f0"
    pushback_changed = (
        "What the release changed stands as the earlier steps left it; the outcome tag and the ledger record "
        "may be missing until this step is retried."
    )
    # (+ amirelease/protection.py: deregistration protection on the rollback window's AMIs)
    iam_actions = (
        "ec2:CreateTags",
        "ec2:DeleteSnapshot",  # a refused release's AMI (baked beside the check) is not kept
        "ec2:DeregisterImage",
        "ec2:DescribeImages",
        "ec2:DisableImageDeregistrationProtection",
        "ec2:EnableImageDeregistrationProtection",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:PutObject",
    )

    def __init__(self, *, task_order: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task_order = task_order
        # tasks that only check: failing there means the release was refused, nothing happened
        self.refusal_task_ids = {TaskIds.PREFLIGHT, TaskIds.CHECK_INFRA}

    def execute(self, context: Context) -> dict[str, Any] | None:
        self._raw_plan: dict[str, Any] | None = None  # what _record read and told, for the follow-ups
        self._told: dict[str, Any] | None = None
        result = self._record(context)
        self._skip_follow_ups(context, result)
        return result

    def _skip_follow_ups(self, context: Context, result: dict[str, Any] | None) -> None:
        """The teardowns after this step (``next_stage``, ``roll_forward``) act on what it recorded.
        Those with nothing to do are skipped here, saying why in this log: the run ends as soon as
        the release is recorded, with no task started only to skip (and Airflow's task supervisor
        writes a skipped state only once the task's process has exited, up to
        ``[workers] min_heartbeat_interval`` later). Those with something to do run and decide
        again themselves (their checks are the same pure functions)."""
        from amirelease.handoffs import ReleasePlan
        from amirelease.operators.promote import next_stage_decision
        from amirelease.operators.roll_forward import decision

        ti = context["ti"]
        follow_ups = {t.task_id: t for t in self.downstream_list}
        reasons: dict[str, str] = {}
        try:
            outcome, raw = self._told, self._raw_plan
            if TaskIds.NEXT_STAGE in follow_ups:
                why, _ = next_stage_decision(ReleasePlan.from_xcom(raw) if raw else None, outcome, context["params"])
                if why:
                    reasons[TaskIds.NEXT_STAGE] = f"No next stage: {why}"
            if TaskIds.ROLL_FORWARD in follow_ups:
                why = decision(outcome, (raw or {}).get("catalog_entry"))
                if why:
                    reasons[TaskIds.ROLL_FORWARD] = f"No automatic rollback: {why}"
        except Exception as exc:  # noqa: BLE001 - then they decide for themselves, as they can
            self.log.warning("Could not decide for the steps after this one, they decide themselves: %s", exc)
            return
        if not reasons:
            return
        for task_id, why in reasons.items():
            self.log.info("%s skipped: %s", task_id, why)
        if result is not None and self.do_xcom_push:
            ti.xcom_push(key="return_value", value=result)  # skip() ends execute before Airflow pushes it
        self.skip(ti, [follow_ups[t] for t in reasons])

    def _record(self, context: Context) -> dict[str, Any] | None:
        from amirelease.handoffs import (
            BakeResult,
            InfrastructureCheck,
            InfrastructureResult,
            RefreshHandle,
            ReleasePlan,
            SmokeResult,
            VerifySummary,
            from_xcom_list,
        )
        from amirelease.ledger import Ledger, ledger_bucket

        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        outcome, failed_task = outcome_of(states, self.task_order)
        raw_plan = self._raw_plan = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT)
        if not raw_plan:
            self.log.info("Preflight produced no plan, so nothing was built or changed: no ledger record")
            return None
        plan = ReleasePlan.from_xcom(raw_plan)
        reason = ti.xcom_pull(task_ids=failed_task, key="failure") if failed_task else None
        if isinstance(reason, list):
            reason = next((r for r in reason if r), None)
        if plan.promoted_from is not None:  # ami_promote: one stage of a release recorded before
            return self._record_stage(context, plan, outcome, failed_task, reason)
        if refused(failed_task, reason, self.refusal_task_ids):
            try:
                self._discard_refused(plan)
            finally:
                self._release_lock(plan.app, ti)
            self._tell(ti, plan, outcome, failed_task, reason, refused=True)
            self.log.info(
                "Release %s %s was refused at '%s' before anything reached the fleet (no ledger record): %s",
                plan.app,
                plan.version,
                failed_task,
                reason or "see that task's log",
            )
            return None
        raw_bake = ti.xcom_pull(task_ids=TaskIds.BAKE)
        raw_check = ti.xcom_pull(task_ids=TaskIds.CHECK_INFRA)
        raw_infra = ti.xcom_pull(task_ids=TaskIds.APPLY_INFRA)
        raw_smoke = ti.xcom_pull(task_ids=TaskIds.SMOKE)
        raw_verify = ti.xcom_pull(task_ids=TaskIds.VERIFY)
        bake = BakeResult.from_xcom(raw_bake) if raw_bake else None
        dag_run = context["dag_run"]
        start = getattr(dag_run, "start_date", None)
        started = start.strftime("%Y-%m-%dT%H:%M:%SZ") if start is not None else None
        record = build_record(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            plan=plan,
            bake=bake,
            check=InfrastructureCheck.from_xcom(raw_check) if raw_check else None,
            infrastructure=InfrastructureResult.from_xcom(raw_infra) if raw_infra else None,
            smoke=SmokeResult.from_xcom(raw_smoke) if raw_smoke else None,
            rollout=from_xcom_list(RefreshHandle, ti.xcom_pull(task_ids=TaskIds.ROLL_OUT)),
            verify=VerifySummary.from_xcom(raw_verify) if raw_verify else None,
            outcome=outcome,
            failed_task=failed_task,
            reason=reason,
            started_at=started,
            phases=self._phases(ti),
        )
        try:
            self._tag(bake, outcome, failed_task, record["finished_at"])
            key = Ledger(self.clients.s3(), ledger_bucket()).put(record)
            self.log.info("Ledger record written: s3://%s/%s", ledger_bucket(), key)
            if outcome == "succeeded":
                self._protect_rollback_targets(plan.app)
        finally:
            self._release_lock(plan.app, ti)
        self._tell(ti, plan, outcome, failed_task, reason, amis=dict(bake.amis) if bake else {})
        if outcome == "succeeded":
            self.log.info(
                "Release %s %s (%s) SUCCEEDED: recorded in the ledger", plan.app, plan.version, plan.release_id
            )
        else:
            self.log.error(
                "Release %s %s (%s) FAILED at '%s': %s. Recorded in the ledger%s.",
                plan.app,
                plan.version,
                plan.release_id,
                failed_task,
                reason or "see that task's log",
                "; the AMI is tagged ReleaseStatus=failed and kept" if bake else "",
            )
        return record

    def _record_stage(
        self, context: Context, plan: ReleasePlan, outcome: str, failed_task: str | None, reason: object
    ) -> dict[str, Any] | None:
        """A promotion: the stage's entry in the release's record (never the release's AMIs or its
        other stages: the release stands as verified before). A refusal writes nothing."""
        from amirelease.handoffs import InfrastructureResult, RefreshHandle, VerifySummary, from_xcom_list
        from amirelease.ledger import Ledger, ledger_bucket
        from amirelease.operators.promote import gate_answer

        ti = context["ti"]
        if refused(failed_task, reason, self.refusal_task_ids):
            self._release_lock(plan.app, ti)
            self._tell(ti, plan, outcome, failed_task, reason, refused=True)
            self.log.info(
                "Promotion of %s %s to %s refused at '%s'; nothing was changed there: %s",
                plan.app,
                plan.version,
                plan.stage,
                failed_task,
                reason or "see that task's log",
            )
            return None
        answer, who, why = gate_answer(ti.xcom_pull(task_ids=TaskIds.APPROVE, key="answer"))
        if outcome == "succeeded" and answer != "approved":
            outcome = answer if answer in NOT_PROMOTED else "not approved"
            reason = f"{outcome} at the gate" + (f" by {who}" if who else "") + (f": {why}" if why else "")
        raw_infra = ti.xcom_pull(task_ids=TaskIds.APPLY_INFRA)
        raw_verify = ti.xcom_pull(task_ids=TaskIds.VERIFY)
        start = getattr(context["dag_run"], "start_date", None)
        entry = stage_record(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            plan=plan,
            infrastructure=InfrastructureResult.from_xcom(raw_infra) if raw_infra else None,
            rollout=from_xcom_list(RefreshHandle, ti.xcom_pull(task_ids=TaskIds.ROLL_OUT)),
            verify=VerifySummary.from_xcom(raw_verify) if raw_verify else None,
            outcome=outcome,
            failed_task=failed_task,
            reason=str(reason) if reason else None,
            started_at=start.strftime("%Y-%m-%dT%H:%M:%SZ") if start is not None else None,
            gate={"answer": answer, "by": who, "reason": why},
            phases=self._phases(ti),
        )
        try:
            ledger = Ledger(self.clients.s3(), ledger_bucket())
            record = ledger.get(plan.app, plan.release_id)  # read once: the other stages' entries stay
            if record is not None:
                ledger.put({**record, "stages": {**(record.get("stages") or {}), plan.stage: entry}})
            self.log.info("Ledger record of %s: stage %s %s", plan.release_id, plan.stage, outcome)
            if outcome == "succeeded":
                self._protect_rollback_targets(plan.app)
        finally:
            self._release_lock(plan.app, ti)
        self._tell(ti, plan, outcome, failed_task, reason, amis={})
        if outcome == "succeeded":
            self.log.info("%s %s is now in %s: verified", plan.app, plan.version, plan.stage)
        elif outcome in NOT_PROMOTED:
            self.log.warning(
                "%s %s was NOT promoted to %s: %s. Nothing was changed there; earlier stages keep running it. To "
                "take it out of those too, trigger ami_rollback for %s; to promote it after all, trigger ami_promote "
                "again with release id %s and stage %s.",
                plan.app,
                plan.version,
                plan.stage,
                reason,
                plan.app,
                plan.release_id,
                plan.stage,
            )
        else:
            self.log.error(
                "Promotion of %s %s to %s FAILED at '%s': %s. Recorded in the ledger.",
                plan.app,
                plan.version,
                plan.stage,
                failed_task,
                reason or "see that task's log",
            )
        return entry

    def _phases(self, ti: Any) -> list[dict[str, Any]]:
        """How long each step took: what each reported (XCom ``phase``), the refresh from AWS's times,
        this step until now. A time that cannot be read is left out, never the record."""
        from amirelease.handoffs import RefreshHandle, from_xcom_list
        from amirelease.phases import PHASE_KEY, phases_of

        order = [*self.task_order, TaskIds.RECORD]
        reported: dict[str, Any] = {TaskIds.RECORD: self.phase_so_far()}
        refreshes: list[dict[str, Any]] = []
        try:
            for step in order[:-1]:
                if step != TaskIds.WAIT and step in ti.task.dag.task_ids:
                    reported[step] = ti.xcom_pull(task_ids=step, key=PHASE_KEY)
            refreshes = [h.to_xcom() for h in from_xcom_list(RefreshHandle, ti.xcom_pull(task_ids=TaskIds.WAIT))]
        except Exception as exc:  # noqa: BLE001 - the record matters more than its times
            self.log.warning("Some steps' times could not be read for the record: %s", exc)
        return phases_of(order, reported, refreshes)

    def _tell(
        self,
        ti: Any,
        plan: ReleasePlan,
        outcome: str,
        failed_task: str | None,
        reason: object,
        *,
        refused: bool = False,
        amis: dict[str, str] | None = None,
    ) -> None:
        """The outcome for the notifications (XCom 'outcome', read by notify.release_outcome, the
        on_success_callback pipeline.py gives this task): no secret, the reason is redacted."""
        kind = (
            "promotion"
            if plan.promoted_from is not None
            else "rollback"
            if plan.re_release_of
            else "rebuild"
            if plan.rebuild_of
            else "release"
        )
        self._told = {
            "app": plan.app,
            "version": plan.version,
            "release_id": plan.release_id,
            "kind": kind,
            "outcome": outcome,
            "failed_task": failed_task,
            "reason": str(reason) if reason else None,
            "refused": refused,
            "amis": amis or {},
            "stage": plan.stage_spec.name,
            "re_release_of": plan.re_release_of,
        }
        ti.xcom_push(key="outcome", value=self._told)

    def _discard_refused(self, plan: ReleasePlan) -> None:
        """A refused release keeps nothing: the AMI a bake beside the check may have finished
        (found by its ReleaseId tag or its name, with its snapshots) and the bundle preflight stored."""
        from amirelease.ledger import ledger_bucket

        for region in plan.image_regions:
            for image_id, snapshots in self.clients.ec2_release(region).discard_release_images(
                plan.release_id, name=plan.ami_name
            ):
                self.log.warning(
                    "Refused release: AMI %s (%s) deregistered and its snapshot(s) %s deleted",
                    image_id,
                    region,
                    ", ".join(snapshots) or "-",
                )
        self.clients.s3().delete_object(Bucket=ledger_bucket(), Key=plan.bundle.key)

    def _tag(self, bake: BakeResult | None, outcome: str, failed_task: str | None, at: str) -> None:
        from amirelease.release import tag_value

        if not bake:
            return
        tags = {TAG_STATUS: "released" if outcome == "succeeded" else "failed", TAG_OUTCOME_AT: at}
        if failed_task:
            tags[TAG_FAILED_TASK] = tag_value(failed_task)
        for region, ami in bake.amis.items():
            self.clients.ec2(region).create_tags(Resources=[ami], Tags=tag_list(tags))
            self.log.info("AMI %s (%s) tagged %s", ami, region, ", ".join(f"{k}={v}" for k, v in tags.items()))

    def _protect_rollback_targets(self, app: str) -> None:
        """AWS guards what runs (amirelease/protection.py): deregistration protection on the live
        release's AMIs, the rollback targets' and held ones; lifted from what fell out. Under the
        lock; a failure is logged, never fails the record (the release has happened)."""
        from amirelease import protection
        from amirelease.ledger import Ledger, ledger_bucket

        try:
            done = protection.sync(
                Ledger(self.clients.s3(), ledger_bucket()), self.clients.ec2, app, protection.protect_releases()
            )
        except Exception as exc:  # noqa: BLE001 - the release is recorded; protection is retried next release
            self.log.warning("Deregistration protection not updated for %s: %s", app, exc)
            return
        if done.errors:
            self.log.warning("Deregistration protection: %s", "; ".join(done.errors))

    def _release_lock(self, app: str, ti: Any) -> None:
        from amirelease.ledger import ReleaseLock, ledger_bucket

        try:
            lock = ReleaseLock(self.clients.s3(), ledger_bucket(), app)
            if lock.release(ti.dag_id, ti.run_id):
                self.log.info("Release lock for %s released", app)
        except ConfigError:
            pass
