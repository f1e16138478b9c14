"""The release pipeline as one reusable piece of wiring.

``ami_release`` and ``ami_rollback`` both call :func:`release_pipeline`, so a rollback
(a re-release) runs exactly the tasks a release runs. Only wiring here: no I/O beyond
listing the catalog's toolchains (local files) at parse time.

Toolchain routing: ``route_toolchain`` picks the app's toolchain; each toolchain has its
own ``check_infrastructure.<tc>``, ``bake.<tc>`` and ``apply_infrastructure.<tc>`` tasks on
that Airflow queue (the workers with Terraform, Packer and Chef). The unchosen toolchains'
tasks are skipped by the scheduler (no worker needed); the joins (``release_lock``,
``baked``, ``applied``) carry on with the chosen one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TaskGroup, TriggerRule, task

from amirelease.callbacks import remember_failure
from amirelease.catalog import app_names, toolchains
from amirelease.constants import TaskIds, toolchain_task
from amirelease.handoffs import ReleasePlan
from amirelease.operators.bake import BakeAmiOperator
from amirelease.operators.infrastructure import ApplyInfrastructureOperator, CheckInfrastructureOperator
from amirelease.operators.lock import ReleaseLockSensor
from amirelease.operators.preflight import ReleasePreflightOperator
from amirelease.operators.record import RecordReleaseOperator
from amirelease.operators.rollout import RollOutOperator, WaitForInstanceRefreshOperator
from amirelease.operators.smoke import SmokeTestOperator
from amirelease.operators.verify import VerifyReleaseOperator
from amirelease.retry import policy as aws_retry_policy

PIPELINE_DOC = """
| step | what it does |
|---|---|
| `preflight` | checks the inputs, catalog, network, groups, vendor base image, ledger and Vault secrets; \
changes nothing |
| `check_infrastructure` | `terraform init`, `validate`, `plan` of the app's module against its current state; \
refuses a plan that would destroy what the catalog does not allow; stores the release bundle |
| `release_lock` | one release per app at a time: a second one waits here |
| `bake` | Packer bakes the AMI from today's vendor image with the stacked Chef cookbooks |
| `smoke_test` | one instance of the new AMI runs the app's checks, then is terminated |
| `apply_infrastructure` | `terraform apply` of the app's module with the new AMI (launch template, group, \
target group, alarms…) |
| `roll_out` / `wait_for_refresh` | an instance refresh per group, followed without holding a worker |
| `verify` | every in-service instance on the new AMI, targets healthy, alarms not in ALARM |
| `record` | tags the AMI, writes the ledger record, releases the lock — whatever happened |
"""


# Shared by the DAGs that run the release pipeline.
DEFAULT_ARGS: dict[str, Any] = {"retries": 0, "aws_conn_id": "aws_default", "on_failure_callback": remember_failure}


def safe_to_repeat() -> dict[str, Any]:
    """Task retries for the steps that are safe to repeat (preflight, the Terraform check, smoke
    test, the waits, verify, record): only when AWS throttles or errs, with exponential backoff
    ([ami_release] aws_step_retries / aws_step_retry_delay_seconds, retry.py)."""
    return aws_retry_policy().step_retry_args()


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


def _the_one_result(ti: Any, group: str, tcs: list[str], what: str) -> Any:
    """The XCom of whichever toolchain's task in ``group`` ran (the others are skipped)."""
    results = [r for r in (ti.xcom_pull(task_ids=toolchain_task(group, tc)) for tc in tcs) if r]
    if len(results) != 1:
        raise ValueError(f"expected exactly one {what} result, got {len(results)}")
    return results[0]


def task_order(tcs: list[str], under_lock: list[str] | None = None) -> list[str]:
    """The pipeline's task ids in execution order (record.py reports the first failed one)."""

    def per(group: str) -> list[str]:
        return [toolchain_task(group, tc) for tc in tcs]

    return [
        TaskIds.PREFLIGHT,
        TaskIds.ROUTE,
        *per(TaskIds.CHECK_INFRA),
        TaskIds.LOCK,
        *(under_lock or []),
        *per(TaskIds.BAKE),
        TaskIds.BAKED,
        TaskIds.SMOKE,
        *per(TaskIds.APPLY_INFRA),
        TaskIds.APPLIED,
        TaskIds.ROLL_OUT,
        TaskIds.WAIT,
        TaskIds.VERIFY,
    ]


def release_pipeline(
    *,
    app: str,
    version: str = "",
    git_ref: str = "",
    notes: str = "",
    triggered_by: str = "",
    re_release: Any = None,
    rebuild: str | bool = False,
    rebuild_reason: str = "",
    under_lock: Any = None,
) -> tuple[Any, Any]:
    """Create the release tasks in the current DAG; return (first task, last task).

    Arguments are templates rendered at run time as text (params), or an upstream task's
    output (``re_release``: resolve_target's RollbackTarget). ``under_lock``: a task that
    decides from the fleet or the ledger (a rollback's ``mark_rolled_back``): it runs right
    after ``release_lock``, while the app's lock is held, and before anything is built.
    """
    tcs = toolchains()
    preflight = ReleasePreflightOperator(
        task_id=TaskIds.PREFLIGHT,
        app=app,
        version=version,
        git_ref=git_ref,
        notes=notes,
        triggered_by=triggered_by,
        re_release=re_release,
        rebuild=rebuild,
        rebuild_reason=rebuild_reason,
    ).as_setup()  # type: ignore[no-untyped-call]  # Airflow's method, untyped (the setup of record)
    plan = preflight.output

    @task.branch(task_id=TaskIds.ROUTE)
    def route_toolchain(raw_plan: dict[str, Any]) -> list[str]:
        """Send the Terraform and bake work to the queue whose workers have the app's toolchain."""
        toolchain = ReleasePlan.from_xcom(raw_plan).toolchain
        if toolchain not in tcs:
            raise ValueError(f"no tasks for toolchain '{toolchain}'; known: {tcs}")
        return [toolchain_task(TaskIds.CHECK_INFRA, toolchain)]

    route = route_toolchain(plan)
    lock = ReleaseLockSensor(
        task_id=TaskIds.LOCK,
        app="{{ ti.xcom_pull(task_ids='" + TaskIds.PREFLIGHT + "')['app'] }}",
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    )

    per_tc: dict[str, dict[str, Any]] = {}
    with TaskGroup(TaskIds.CHECK_INFRA, tooltip="terraform init/validate/plan, one task per toolchain queue"):
        for tc in tcs:
            per_tc[tc] = {
                "check": CheckInfrastructureOperator(
                    task_id=tc, plan=plan, queue=tc, execution_timeout=timedelta(minutes=30)
                )
            }
    with TaskGroup(TaskIds.BAKE, tooltip="Packer + stacked Chef cookbooks, one task per toolchain queue"):
        for tc in tcs:
            per_tc[tc]["bake"] = BakeAmiOperator(
                task_id=tc,
                plan=plan,
                queue=tc,
                retries=1,
                retry_delay=timedelta(seconds=10),
                execution_timeout=timedelta(hours=3),
            )

    @task(task_id=TaskIds.BAKED, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def baked(ti: Any = None) -> Any:
        """The AMI from whichever toolchain's bake ran."""
        return _the_one_result(ti, TaskIds.BAKE, tcs, "bake")

    ami = baked()
    smoke = SmokeTestOperator(task_id=TaskIds.SMOKE, plan=plan, bake=ami, execution_timeout=timedelta(minutes=45))

    with TaskGroup(TaskIds.APPLY_INFRA, tooltip="terraform apply with the new AMI, one task per toolchain queue"):
        for tc in tcs:
            per_tc[tc]["apply"] = ApplyInfrastructureOperator(
                task_id=tc,
                plan=plan,
                bake=ami,
                queue=tc,
                retries=1,
                retry_delay=timedelta(seconds=10),
                execution_timeout=timedelta(hours=2),
            )

    @task(task_id=TaskIds.APPLIED, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def applied(ti: Any = None) -> Any:
        """The Terraform outputs from whichever toolchain's apply ran."""
        return _the_one_result(ti, TaskIds.APPLY_INFRA, tcs, "apply")

    infra = applied()
    roll_out = RollOutOperator(task_id=TaskIds.ROLL_OUT, plan=plan, bake=ami, infrastructure=infra)
    waits = WaitForInstanceRefreshOperator.partial(task_id=TaskIds.WAIT, **safe_to_repeat()).expand(
        refresh=roll_out.output
    )
    verify = VerifyReleaseOperator(task_id=TaskIds.VERIFY, plan=plan, refreshes=waits.output)
    record = RecordReleaseOperator(
        task_id=TaskIds.RECORD,
        task_order=task_order(tcs, [under_lock.task_id] if under_lock is not None else None),
        bake_task_ids=[toolchain_task(TaskIds.BAKE, tc) for tc in tcs],
        check_task_ids=[toolchain_task(TaskIds.CHECK_INFRA, tc) for tc in tcs],
        apply_task_ids=[toolchain_task(TaskIds.APPLY_INFRA, tc) for tc in tcs],
    )

    for step in (preflight, *(per_tc[tc]["check"] for tc in tcs), smoke, verify, record):
        for name, value in safe_to_repeat().items():
            setattr(step, name, value)

    preflight >> route
    for tc in tcs:
        route >> per_tc[tc]["check"] >> lock
        [under_lock or lock, per_tc[tc]["check"]] >> per_tc[tc]["bake"] >> ami
        [smoke, per_tc[tc]["bake"]] >> per_tc[tc]["apply"] >> infra
    if under_lock is not None:
        lock >> under_lock
    ami >> smoke
    infra >> roll_out
    verify >> record.as_teardown(setups=preflight)
    return preflight, record
