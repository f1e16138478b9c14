"""The release pipeline as one reusable piece of wiring.

``ami_release`` and ``ami_rollback`` both call :func:`release_pipeline`, so a rollback
(a re-release) runs exactly the tasks a release runs. Only wiring here: no I/O beyond
listing the catalog's toolchains (local files) at parse time.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, TaskGroup, TriggerRule, task

from amirelease.callbacks import remember_failure
from amirelease.catalog import app_names, toolchains
from amirelease.operators.bake import BakeAmiOperator
from amirelease.operators.lock import ReleaseLockSensor
from amirelease.operators.preflight import ReleasePreflightOperator
from amirelease.operators.record import RecordReleaseOperator
from amirelease.operators.rollout import RollOutOperator, WaitForInstanceRefreshOperator
from amirelease.operators.smoke import SmokeTestOperator
from amirelease.operators.verify import VerifyReleaseOperator

PIPELINE_DOC = """
`preflight` (checks only) → `release_lock` (one release per app) → `route_toolchain` →
`bake.<toolchain>` (Packer, on that toolchain's queue) → `baked` → `smoke_test` (one
instance, SSM checks, always terminated) → `roll_out` (launch-template version + instance
refresh per group) → `wait_for_refresh` (deferred to the triggerer) → `verify` → `record`
(AMI tags + ledger + lock release, whatever happened).
"""


# Shared by the DAGs that run the release pipeline.
DEFAULT_ARGS = {"retries": 0, "aws_conn_id": "aws_default", "on_failure_callback": remember_failure}


def app_param() -> Param:
    """The trigger form's application dropdown: the catalog's file names (no parsing, no I/O beyond a listing)."""
    apps = app_names()
    return Param(
        apps[0] if apps else "",
        type="string",
        enum=apps or [""],
        title="Application",
        description="An application from the catalog (include/apps/<app>.yaml)",
    )


def release_pipeline(
    *,
    app: str,
    version: str,
    git_ref: str = "",
    notes: str = "",
    re_release_of: str = "",
    run_list: str | list | None = None,
    triggered_by: str = "",
):
    """Create the release tasks in the current DAG; return (first task, last task).

    Arguments are templates rendered at run time (params or XCom of an upstream task).
    """
    tcs = toolchains()
    preflight = ReleasePreflightOperator(
        task_id="preflight",
        app=app,
        version=version,
        git_ref=git_ref,
        notes=notes,
        re_release_of=re_release_of,
        run_list=run_list,
        triggered_by=triggered_by,
    )
    lock = ReleaseLockSensor(task_id="release_lock", app="{{ ti.xcom_pull(task_ids='preflight')['app'] }}")

    @task.branch(task_id="route_toolchain")
    def route_toolchain(plan: dict) -> str:
        """Send the bake to the queue whose workers have the app's toolchain."""
        if plan["toolchain"] not in tcs:
            raise ValueError(f"no bake task for toolchain '{plan['toolchain']}'; known: {tcs}")
        return f"bake.{plan['toolchain']}"

    route = route_toolchain(preflight.output)
    preflight >> lock >> route

    with TaskGroup("bake", tooltip="Packer + stacked Chef cookbooks, one task per toolchain queue") as bake_group:
        bakes = [
            BakeAmiOperator(
                task_id=tc,
                plan=preflight.output,
                queue=tc,
                retries=1,
                retry_delay=timedelta(seconds=10),
                execution_timeout=timedelta(hours=3),
            )
            for tc in tcs
        ]
    route >> bake_group

    @task(task_id="baked", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def baked(ti=None) -> dict:
        """The AMI from whichever toolchain's bake ran."""
        results = [r for r in (ti.xcom_pull(task_ids=b.task_id) for b in bakes) if r]
        if len(results) != 1:
            raise ValueError(f"expected exactly one bake result, got {len(results)}")
        return results[0]

    ami = baked()
    bake_group >> ami

    smoke = SmokeTestOperator(
        task_id="smoke_test", plan=preflight.output, bake=ami, execution_timeout=timedelta(minutes=45)
    )
    roll_out = RollOutOperator(task_id="roll_out", plan=preflight.output, bake=ami)
    smoke >> roll_out
    waits = WaitForInstanceRefreshOperator.partial(task_id="wait_for_refresh").expand(refresh=roll_out.output)
    verify = VerifyReleaseOperator(task_id="verify", plan=preflight.output, refreshes=waits.output)
    record = RecordReleaseOperator(
        task_id="record",
        trigger_rule=TriggerRule.ALL_DONE,
        task_order=[
            "preflight",
            "release_lock",
            "route_toolchain",
            *[b.task_id for b in bakes],
            "baked",
            "smoke_test",
            "roll_out",
            "wait_for_refresh",
            "verify",
        ],
        bake_task_ids=[b.task_id for b in bakes],
    )
    verify >> record
    return preflight, record
