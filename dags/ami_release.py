"""ami_release: bake -> smoke test -> roll out -> verify one application version.

Wiring only; the behaviour lives in plugins/amirelease. Nothing here touches AWS or Vault.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule, task

from amirelease.catalog import VERSION_PATTERN, app_names, toolchains
from amirelease.operators.bake import BakeAmiOperator
from amirelease.operators.preflight import ReleasePreflightOperator
from amirelease.operators.record import RecordReleaseOperator
from amirelease.operators.rollout import RollOutOperator, WaitForInstanceRefreshOperator
from amirelease.operators.smoke import SmokeTestOperator
from amirelease.operators.verify import VerifyReleaseOperator

APPS = app_names()
TOOLCHAINS = toolchains()

with DAG(
    dag_id="ami_release",
    description="Release an application version as a new AMI and roll it out to its Auto Scaling groups",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=8,
    tags=["ami", "release"],
    default_args={"retries": 0, "aws_conn_id": "aws_default"},
    params={
        "app": Param(APPS[0] if APPS else "", type="string", enum=APPS or [""], title="Application",
                     description="An application from the catalog (include/apps/<app>.yaml)"),
        "version": Param("", type="string", pattern=VERSION_PATTERN, minLength=5, maxLength=64, title="Version",
                         description="Semantic version of the release, e.g. 1.4.2 or 2.0.0-rc.1"),
        "git_ref": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9._/-]{1,128}$", title="Git ref (optional)",
                         description="Commit, tag or branch of the app's cookbooks this release was cut from"),
        "notes": Param(None, type=["null", "string"], maxLength=500, title="Release notes (optional)"),
        "re_release_of": Param(None, type=["null", "string"], pattern=r"^[a-z0-9][a-z0-9.-]{2,120}$", title="Re-release of (set by ami_rollback)",
                               description="Release id whose recorded inputs this run bakes again. Leave empty for a normal release."),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__ + """
### Trigger
Choose the **app** and type the **version**. Preflight checks the catalog, the groups, the
vendor base image and the Vault secrets before anything is created.

### Tasks
`preflight` → `route_toolchain` → `bake.<toolchain>` (Packer, on that toolchain's queue)
→ `smoke_test` (one instance, SSM checks, always terminated) → `roll_out` (launch-template
version + instance refresh per group) → `wait_for_refresh` (deferred) → `verify` → `record`.
""",
) as dag:
    preflight = ReleasePreflightOperator(
        task_id="preflight",
        app="{{ params.app }}",
        version="{{ params.version }}",
        git_ref="{{ params.git_ref or '' }}",
        notes="{{ params.notes or '' }}",
        re_release_of="{{ params.re_release_of or '' }}",
        triggered_by="{{ dag_run.triggering_user_name or dag_run.run_type }}",
    )

    @task.branch(task_id="route_toolchain")
    def route_toolchain(plan: dict) -> str:
        """Send the bake to the queue whose workers have the app's toolchain."""
        if plan["toolchain"] not in TOOLCHAINS:
            raise ValueError(f"no bake task for toolchain '{plan['toolchain']}'; known: {TOOLCHAINS}")
        return f"bake.{plan['toolchain']}"

    route = route_toolchain(preflight.output)

    with TaskGroup("bake", tooltip="Packer + stacked Chef cookbooks, one task per toolchain queue") as bake_group:
        bakes = [
            BakeAmiOperator(task_id=tc, plan=preflight.output, queue=tc, retries=1, retry_delay=timedelta(seconds=30),
                            execution_timeout=timedelta(hours=3))
            for tc in TOOLCHAINS
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

    smoke = SmokeTestOperator(task_id="smoke_test", plan=preflight.output, bake=ami, execution_timeout=timedelta(minutes=45))
    roll_out = RollOutOperator(task_id="roll_out", plan=preflight.output, bake=ami)
    smoke >> roll_out
    waits = WaitForInstanceRefreshOperator.partial(task_id="wait_for_refresh").expand(refresh=roll_out.output)
    verify = VerifyReleaseOperator(task_id="verify", plan=preflight.output, refreshes=waits.output)

    record = RecordReleaseOperator(
        task_id="record",
        trigger_rule=TriggerRule.ALL_DONE,
        task_order=["preflight", "route_toolchain", *[b.task_id for b in bakes], "baked", "smoke_test", "roll_out", "wait_for_refresh", "verify"],
        bake_task_ids=[b.task_id for b in bakes],
    )
    verify >> record
