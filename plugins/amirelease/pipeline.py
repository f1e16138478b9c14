"""The release pipeline as one reusable piece of wiring.

``ami_release`` and ``ami_rollback`` both call :func:`release_pipeline`, so a rollback
(a re-release) runs exactly the tasks a release runs. Only wiring here: no I/O beyond
listing the catalog's toolchains (local files) at parse time.

Toolchain routing: ``check_infrastructure``, ``bake`` and ``apply_infrastructure`` are one
task each; Airflow's cluster policy (amirelease/routing.py) puts each of their task instances on
the queue of the run's app's toolchain (the workers with Terraform, Packer and Chef). No branch
task, no task per toolchain, no join.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param

from amirelease import notify
from amirelease.callbacks import remember_failure
from amirelease.catalog_index import app_names
from amirelease.constants import DEFAULT_AWS_CONN_ID, TaskIds
from amirelease.operators.bake import BakeAmiOperator
from amirelease.operators.infrastructure import ApplyInfrastructureOperator, CheckInfrastructureOperator
from amirelease.operators.lock import ReleaseLockSensor
from amirelease.operators.preflight import ReleasePreflightOperator
from amirelease.operators.record import RecordReleaseOperator
from amirelease.operators.roll_forward import AutoRollForwardOperator
from amirelease.operators.rollout import RollOutOperator, WaitForInstanceRefreshOperator
from amirelease.operators.smoke import SmokeTestOperator
from amirelease.operators.verify import VerifyReleaseOperator
from amirelease.retry import policy as aws_retry_policy

PIPELINE_DOC = """
| step | what it does |
|---|---|
| `preflight` | checks the inputs, catalog, network, groups, vendor base image, ledger and Vault secrets; stores \
the release bundle; changes nothing in AWS |
| `release_lock` | one release per app at a time: a second one waits here |
| `check_infrastructure` | beside the bake: `terraform init`, `validate`, `plan` of the app's module against its \
current state; refuses a plan that would destroy what the catalog does not allow. If it fails, the bake stops and \
nothing it built is kept |
| `bake` | Packer bakes the AMI from today's vendor image with the stacked Chef cookbooks |
| `smoke_test` | one instance of the new AMI runs the app's checks, then is terminated |
| `apply_infrastructure` | beside the smoke test: `terraform plan` with the new AMI; once the smoke test passed, \
`apply` of exactly that plan (launch template, group, target group, alarms…) |
| `roll_out` / `wait_for_refresh` | an instance refresh per group, followed without holding a worker |
| `verify` | every in-service instance on the new AMI, targets healthy, alarms not in ALARM |
| `record` | tags the AMI, writes the ledger record, releases the lock — whatever happened |
| `roll_forward` | `ami_release` only: a release that failed on the fleet (refresh or verify) starts `ami_rollback` \
to the last good release when its app opts in (catalog `rollback: {automatic: true}`); otherwise skipped, saying why |
"""


# Shared by the DAGs that run the release pipeline.
DEFAULT_ARGS: dict[str, Any] = {
    "retries": 0,
    "aws_conn_id": DEFAULT_AWS_CONN_ID,
    "on_failure_callback": remember_failure,
}


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


def task_order(under_lock: list[str] | None = None) -> list[str]:
    """The pipeline's task ids in the order a failure is reported (record.py names the first
    failed one): the check and a rollback's decision before the bake that runs beside them, so
    a bake they stopped is not the reason."""
    return [
        TaskIds.PREFLIGHT,
        TaskIds.LOCK,
        TaskIds.CHECK_INFRA,
        *(under_lock or []),
        TaskIds.BAKE,
        TaskIds.SMOKE,
        TaskIds.APPLY_INFRA,
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
    roll_forward: bool = False,
) -> tuple[Any, Any]:
    """Create the release tasks in the current DAG; return (first task, last task).

    Arguments are templates rendered at run time as text (params), or an upstream task's
    output (``re_release``: resolve_target's RollbackTarget). ``under_lock``: a task that
    decides from the fleet or the ledger (a rollback's ``mark_rolled_back``): it runs right
    after ``release_lock``, while the app's lock is held, and before anything is built.
    ``roll_forward`` (ami_release only, never a rollback): after ``record``, start ``ami_rollback``
    when the release failed on the fleet and its app opts in (operators/roll_forward.py).
    """
    preflight = ReleasePreflightOperator(
        task_id=TaskIds.PREFLIGHT,
        on_success_callback=notify.release_started,  # notifications (notify.py, the app's catalog notify:)
        on_failure_callback=[remember_failure, notify.release_refused],
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

    lock = ReleaseLockSensor(
        task_id=TaskIds.LOCK,
        app="{{ ti.xcom_pull(task_ids='" + TaskIds.PREFLIGHT + "')['app'] }}",
    )
    # check_infrastructure, bake, apply_infrastructure: on the app's toolchain queue (routing.py).
    # The gates: what must pass before anything built is kept or anything reaches the fleet. The
    # bake runs beside them and stops when one fails; the smoke test and the apply come after them.
    check = CheckInfrastructureOperator(task_id=TaskIds.CHECK_INFRA, plan=plan, execution_timeout=timedelta(minutes=30))
    gates = [check] if under_lock is None else [check, under_lock]
    bake = BakeAmiOperator(
        task_id=TaskIds.BAKE,
        plan=plan,
        gates=[g.task_id for g in gates],
        retries=1,
        retry_delay=timedelta(seconds=10),
        execution_timeout=timedelta(hours=3),
    )
    smoke = SmokeTestOperator(
        task_id=TaskIds.SMOKE,
        plan=plan,
        bake=bake.output,
        priority_weight=10,  # before the apply when both are ready: the apply waits for its verdict
        execution_timeout=timedelta(minutes=45),
    )
    apply = ApplyInfrastructureOperator(  # plans while the smoke test runs; applies after it passed
        task_id=TaskIds.APPLY_INFRA,
        plan=plan,
        bake=bake.output,
        after=TaskIds.SMOKE,
        retries=1,
        retry_delay=timedelta(seconds=10),
        execution_timeout=timedelta(hours=2),
    )
    roll_out = RollOutOperator(task_id=TaskIds.ROLL_OUT, plan=plan, bake=bake.output, infrastructure=apply.output)
    waits = WaitForInstanceRefreshOperator.partial(task_id=TaskIds.WAIT, **safe_to_repeat()).expand(
        refresh=roll_out.output
    )
    verify = VerifyReleaseOperator(task_id=TaskIds.VERIFY, plan=plan, refreshes=waits.output)
    record = RecordReleaseOperator(
        task_id=TaskIds.RECORD,
        on_success_callback=notify.release_outcome,  # tells what record recorded (its XCom 'outcome')
        on_failure_callback=[remember_failure, notify.record_failed],
        task_order=task_order([under_lock.task_id] if under_lock is not None else None),
    )

    for step in (preflight, check, smoke, verify, record):
        for name, value in safe_to_repeat().items():
            setattr(step, name, value)

    preflight >> lock >> [check, bake]
    if under_lock is not None:
        [lock, check] >> under_lock  # a rollback marks what it replaces only once the check passed
    [bake, *gates] >> smoke
    [bake, *gates] >> apply
    apply >> roll_out
    smoke >> roll_out
    verify >> record.as_teardown(setups=preflight)
    if roll_forward:  # a teardown too: the run's state stays the release's, whatever this task does
        auto = AutoRollForwardOperator(task_id=TaskIds.ROLL_FORWARD, **safe_to_repeat())
        record >> auto.as_teardown(setups=preflight)
        return preflight, auto
    return preflight, record
