"""One release per app at a time: a sensor that waits for the app's lock in the ledger bucket."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf

from amirelease.constants import TaskIds
from amirelease.errors import PreflightError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease.handoffs import ReleasePlan
    from amirelease.ledger import Ledger

FINISHED = ("success", "failed")


class ReleaseLockSensor(AwsBaseSensor[S3Hook]):
    """Acquire the per-app release lock, waiting (reschedule mode: no worker slot held)
    while another run of the same app holds it. Different apps never wait for each other.
    The lock is released by the pipeline's last task, whatever the outcome.

    Once it holds the lock it re-checks what preflight decided before the lock (DESIGN.md,
    "decide under the lock"): a plain release whose version has meanwhile been released by
    another run (two triggers of one version that both passed preflight) is refused here,
    before anything is built, in the same words as preflight's refusal.

    :param app: the application (rendered from the plan; a text template, so the sensor's own
        trigger rule is free of the setup task's constraints).
    """

    aws_hook_class = S3Hook
    template_fields: Sequence[str] = aws_template_fields("app")
    iam_role = "deploy"
    iam_actions = ("s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject")
    ui_color = "#fff7d6"

    def __init__(self, *, app: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", conf.getfloat("ami_release", "lock_poke_seconds", fallback=15.0))
        kwargs.setdefault("timeout", 6 * 3600)
        super().__init__(**kwargs)
        self.app = app

    def poke(self, context: Context) -> bool:
        from amirelease.handoffs import ReleasePlan
        from amirelease.ledger import ReleaseLock, ledger_bucket, utcnow

        ti = context["ti"]
        app = self.app
        lock = ReleaseLock(self.hook.conn, ledger_bucket(), app)
        raw_plan = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT)
        plan = ReleasePlan.from_xcom(raw_plan) if raw_plan else None
        me = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "app": app,
            "version": plan.version if plan else None,
            "acquired_at": utcnow(),
        }
        ok, holder = lock.try_acquire(me)
        if ok:
            self.log.info("Release lock for %s acquired by %s", app, ti.run_id)
            return self._held_from(context, plan)
        if holder is None:  # released between our attempt and our look: try once more
            ok, _ = lock.try_acquire(me)
            return self._held_from(context, plan) if ok else False
        state = None
        try:
            state = ti.get_dagrun_state(dag_id=holder["dag_id"], run_id=holder["run_id"])
        except Exception as exc:  # noqa: BLE001 - an unknown run is as good as finished
            self.log.info("Holder run %s not found (%s)", holder.get("run_id"), type(exc).__name__)
        if state is None or str(state) in FINISHED:
            self.log.warning(
                "Release lock for %s is stale (holder %s is %s): taking it over",
                app,
                holder.get("run_id"),
                state or "gone",
            )
            lock.break_stale(holder)
            ok, _ = lock.try_acquire(me)
            return self._held_from(context, plan) if ok else False
        self.log.info(
            "Another release of %s is running (%s %s since %s): waiting",
            app,
            holder.get("dag_id"),
            holder.get("run_id"),
            holder.get("acquired_at"),
        )
        return False

    def _held_from(self, context: Context, plan: ReleasePlan | None) -> bool:
        """``_held``, then this step's time for the record (phases.py): from its first poke (a wait
        for another release's lock included) until the lock was ours and re-checked under it."""
        from amirelease.operators.base import first_start, report_phase

        held = self._held(plan)
        report_phase(context, first_start(context) or getattr(context["ti"], "start_date", None), self.log)
        return held

    def _held(self, plan: ReleasePlan | None) -> bool:
        """Called once the lock is ours: re-check, under the lock, what preflight decided."""
        from amirelease.ledger import Ledger, ledger_bucket

        if plan is not None:
            self.recheck(Ledger(self.hook.conn, ledger_bucket()), plan)
        return True

    def recheck(self, ledger: Ledger, plan: ReleasePlan) -> None:
        """A plain release of a version that another run released while this one waited, or a
        rebuild of a version that another run released or rebuilt meanwhile (a double click),
        is refused here; the lock is released by ``record``. A rollback's re-release is checked
        by its own ``mark_rolled_back``. A promotion (``ami_promote``) is decided again here:
        still verified in the previous stage, not rolled back, no newer release verified there."""
        from amirelease.ledger import already_released, released_words, ways_on

        if plan.promoted_from is not None:
            from amirelease.ledger import record_of
            from amirelease.operators.promote import promotion_refusal, refusal_fix

            history = ledger.history(plan.app)
            why = promotion_refusal(history, record_of(history, plan.release_id), plan.stage, plan.promoted_from)
            if why:
                raise PreflightError(
                    f"{plan.app} cannot be promoted to {plan.stage} (decided under the lock, after the gate): {why}",
                    fix=refusal_fix(plan.stage),
                )
            self.log.info("Under the lock: %s %s may still go to %s; going on", plan.app, plan.version, plan.stage)
            return
        if plan.re_release_of:
            return
        existing = already_released(ledger.history(plan.app), plan.version, besides=plan.release_id)
        if plan.rebuild_of:
            if existing is not None and existing.get("release_id") != plan.rebuild_of:
                raise PreflightError(
                    released_words(plan.app, existing)
                    + f" while this rebuild of {plan.rebuild_of} waited for the release lock; nothing was built for "
                    "this run",
                    fix="look at that release; if you still need another rebuild, trigger it again",
                )
            self.log.info("Under the lock: nobody rebuilt %s %s meanwhile; going on", plan.app, plan.version)
            return
        if existing is not None:
            raise PreflightError(
                released_words(plan.app, existing)
                + " while this run waited for the release lock; nothing was built for this run",
                fix=ways_on(plan.version),
            )
        self.log.info("Under the lock: %s %s has no succeeded release yet; going on", plan.app, plan.version)
