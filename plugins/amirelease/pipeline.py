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
from amirelease.operators.promote import NextStageOperator, PromotePreflightOperator
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
| `next_stage` | an app with stages: once this stage verified, starts `ami_promote` for the next one (its \
gate waits for a release manager); otherwise `record` skips it, saying why in its log |
| `roll_forward` | `ami_release` only: a release that failed on the fleet (refresh or verify) starts `ami_rollback` \
to the last good release when its app opts in (catalog `rollback: {automatic: true}`); otherwise `record` skips it, \
saying why in its log (no task start only to skip) |
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


STAGE_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"  # a stage's name (the catalog schema's stages[].name)


def until_stage_param() -> Param:
    """ami_rollback's and ami_promote's: how far a re-release goes through the stages."""
    return Param(
        None,
        type=["null", "string"],
        pattern=STAGE_PATTERN,
        title="Last stage (set by the automatic roll-forward)",
        description="Leave empty: every stage. A release that failed in a stage sets it to that stage, so its "
        "rollback re-releases up to there and no further.",
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
    rollback: dict[str, Any] | None = None,
    rebuild: str | bool = False,
    rebuild_reason: str = "",
    under_lock: Any = None,
    roll_forward: bool = False,
) -> tuple[Any, Any]:
    """Create the release tasks in the current DAG; return (first task, last task).

    Arguments are templates rendered at run time as text (params). ``rollback`` (ami_rollback):
    what its form asked (target, reason, confirm_rolled_back, replaces), which ``preflight``
    resolves into the release it re-releases. ``under_lock``: a task that decides from the
    fleet or the ledger (a rollback's ``mark_rolled_back``): it runs right after
    ``release_lock``, while the app's lock is held, and before anything is built.
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
        rollback=rollback,
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
    # the apply plans while the smoke test runs and applies after it passed
    apply, roll_out, record = _to_the_fleet(
        preflight,
        bake.output,
        after=TaskIds.SMOKE,
        task_order=task_order([under_lock.task_id] if under_lock is not None else None),
    )
    for step in (check, smoke):
        for name, value in safe_to_repeat().items():
            setattr(step, name, value)

    preflight >> lock >> [check, bake]
    if under_lock is not None:
        [lock, check] >> under_lock  # a rollback marks what it replaces only once the check passed
    [bake, *gates] >> smoke
    [bake, *gates] >> apply
    smoke >> roll_out
    return preflight, _after_record(preflight, record, roll_forward=roll_forward)


def _to_the_fleet(preflight: Any, bake: Any, *, after: str | None, task_order: list[str]) -> tuple[Any, Any, Any]:
    """The stage's segment, the same in a release and a promotion: ``apply_infrastructure`` →
    ``roll_out`` → ``wait_for_refresh`` (mapped, deferred) → ``verify`` → ``record`` (the
    teardown of ``preflight``). Returns (apply, roll_out, record) for the caller's edges."""
    plan = preflight.output
    apply = ApplyInfrastructureOperator(
        task_id=TaskIds.APPLY_INFRA,
        plan=plan,
        bake=bake,
        after=after,
        retries=1,
        retry_delay=timedelta(seconds=10),
        execution_timeout=timedelta(hours=2),
    )
    roll_out = RollOutOperator(task_id=TaskIds.ROLL_OUT, plan=plan, bake=bake, infrastructure=apply.output)
    waits = WaitForInstanceRefreshOperator.partial(task_id=TaskIds.WAIT, **safe_to_repeat()).expand(
        refresh=roll_out.output
    )
    verify = VerifyReleaseOperator(task_id=TaskIds.VERIFY, plan=plan, refreshes=waits.output)
    record = RecordReleaseOperator(
        task_id=TaskIds.RECORD,
        on_success_callback=notify.release_outcome,  # tells what record recorded (its XCom 'outcome')
        on_failure_callback=[remember_failure, notify.record_failed],
        task_order=task_order,
    )
    for step in (preflight, verify, record):
        for name, value in safe_to_repeat().items():
            setattr(step, name, value)
    apply >> roll_out
    verify >> record.as_teardown(setups=preflight)
    return apply, roll_out, record


def _after_record(preflight: Any, record: Any, *, roll_forward: bool) -> Any:
    """Teardowns after ``record`` (the run's state stays the release's, whatever they do):
    the next stage's promotion (with the run's ``emergency`` and ``until_stage`` params, where it
    has them), and (ami_release, ami_promote) the automatic rollback."""
    nxt = NextStageOperator(task_id=TaskIds.NEXT_STAGE, **safe_to_repeat())
    record >> nxt.as_teardown(setups=preflight)
    if roll_forward:
        auto = AutoRollForwardOperator(task_id=TaskIds.ROLL_FORWARD, **safe_to_repeat())
        record >> auto.as_teardown(setups=preflight)
        return auto
    return nxt


PROMOTE_DOC = """
| step | what it does |
|---|---|
| `preflight` | the release's ledger record: verified in the previous stage, not rolled back, no newer \
release verified there since; its AMIs available. Changes nothing |
| `check_infrastructure` | the stage's Terraform plan with the release's AMI (read-only), shown at the gate |
| `approve` | the gate: a release manager approves or rejects in the Airflow UI (Required Actions); no answer \
before the stage's timeout counts as a rejection. No worker slot, no lock held while it waits |
| `release_lock` | the app's lock; the promotion is decided again under it |
| `apply_infrastructure` | `terraform plan` + `apply` of the stage's state with the release's AMI |
| `roll_out` / `wait_for_refresh` / `verify` | the stage's groups, as in a release |
| `record` | the stage's entry in the release's ledger record (who approved, or who rejected and why) |
| `roll_forward` / `next_stage` | a failure on the fleet starts `ami_rollback` (apps that opt in); a success \
starts the next stage's promotion |
"""


def promote_pipeline(*, app: str, release_id: str, stage: str, triggered_by: str) -> tuple[Any, Any]:
    """``ami_promote``'s tasks: one stage of a release verified before, behind a gate (operators/gate.py)."""
    from amirelease.operators.gate import StageGateOperator  # the HITL operators: only this DAG needs them

    preflight = PromotePreflightOperator(
        task_id=TaskIds.PREFLIGHT,
        on_failure_callback=remember_failure,
        app=app,
        release_id=release_id,
        stage=stage,
        triggered_by=triggered_by,
    ).as_setup()  # type: ignore[no-untyped-call]  # Airflow's method, untyped (the setup of record)
    plan = preflight.output
    bake = preflight.output["bake"]
    check = CheckInfrastructureOperator(
        task_id=TaskIds.CHECK_INFRA, plan=plan, bake=bake, execution_timeout=timedelta(minutes=30)
    )
    gate = StageGateOperator(task_id=TaskIds.APPROVE)  # an emergency: read from the run's conf
    lock = ReleaseLockSensor(task_id=TaskIds.LOCK, app=app)
    apply, _, record = _to_the_fleet(
        preflight,
        bake,
        after=None,  # the gate and the lock come before it: nothing to wait for
        task_order=[
            TaskIds.PREFLIGHT,
            TaskIds.CHECK_INFRA,
            TaskIds.APPROVE,
            TaskIds.LOCK,
            TaskIds.APPLY_INFRA,
            TaskIds.ROLL_OUT,
            TaskIds.WAIT,
            TaskIds.VERIFY,
        ],
    )
    for name, value in safe_to_repeat().items():
        setattr(check, name, value)
    preflight >> check >> gate >> lock >> apply
    return preflight, _after_record(preflight, record, roll_forward=True)
