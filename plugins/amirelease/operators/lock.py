"""One release per app at a time: a sensor that waits for the app's lock in the ledger bucket."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf

from amirelease.ledger import ReleaseLock, ledger_bucket, utcnow

if TYPE_CHECKING:
    from airflow.sdk import Context

FINISHED = ("success", "failed")


class ReleaseLockSensor(AwsBaseSensor[S3Hook]):
    """Acquire the per-app release lock, waiting (reschedule mode: no worker slot held)
    while another run of the same app holds it. Different apps never wait for each other.
    The lock is released by the pipeline's last task, whatever the outcome.

    :param app: the application (rendered from the plan; a text template, so the sensor's own
        trigger rule is free of the setup task's constraints).
    """

    aws_hook_class = S3Hook
    template_fields: Sequence[str] = aws_template_fields("app")
    iam_role = "deploy"
    iam_actions = ("s3:DeleteObject", "s3:GetObject", "s3:PutObject")
    ui_color = "#fff7d6"

    def __init__(self, *, app: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", conf.getfloat("ami_release", "lock_poke_seconds", fallback=15.0))
        kwargs.setdefault("timeout", 6 * 3600)
        super().__init__(**kwargs)
        self.app = app

    def poke(self, context: Context) -> bool:
        ti = context["ti"]
        app = self.app
        lock = ReleaseLock(self.hook.conn, ledger_bucket(), app)
        me = {"dag_id": ti.dag_id, "run_id": ti.run_id, "app": app, "acquired_at": utcnow()}
        ok, holder = lock.try_acquire(me)
        if ok:
            self.log.info("Release lock for %s acquired by %s", app, ti.run_id)
            return True
        if holder is None:  # released between our attempt and our look: try once more
            ok, _ = lock.try_acquire(me)
            return ok
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
            return ok
        self.log.info(
            "Another release of %s is running (%s %s since %s): waiting",
            app,
            holder.get("dag_id"),
            holder.get("run_id"),
            holder.get("acquired_at"),
        )
        return False
