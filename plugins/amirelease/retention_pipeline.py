"""The tasks both retention DAGs run (``ami_retention`` on a schedule, ``ami_retention_manual``
on demand): read the policy's accounts and regions, one retention task per account x region
(the workers' own account when the policy names none), then a summary naming what failed.

Concurrency: at most ``[ami_release] retention_max_parallel`` (default 4) retention tasks of a
run at once (``max_active_tis_per_dagrun``). Chosen over a pool because it needs no setup (a
missing pool leaves tasks unscheduled), the scheduler enforces it per run on Celery
(``dag.test()`` runs tasks one at a time anyway), and it bounds what matters: one run's load on
the workers and on the workers' own account (STS, the ledger bucket). Each account's AWS limits
are its own, and both retention DAGs keep one active run.

Nothing here touches AWS at import or parse time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, task

from amirelease.constants import DEFAULT_AWS_CONN_ID
from amirelease.operators.retention import MODES
from amirelease.operators.retention_accounts import AccountRetentionOperator
from amirelease.retention.pacing import pace_retention
from amirelease.retry import policy

DEFAULT_SCHEDULE = "*/5 * * * *"
DEFAULT_MAX_PARALLEL = 4
POLICY_PATH = None  # None: [ami_release] retention_policy, else include/policies/ami-retention.yaml


def schedule() -> str:
    """The scheduled DAG's cron: ``[ami_release] retention_schedule``, default every 5 minutes."""
    from airflow.sdk.configuration import conf

    return conf.get("ami_release", "retention_schedule", fallback="").strip() or DEFAULT_SCHEDULE


def max_parallel() -> int:
    """At most this many retention tasks (account x region) of one run at once:
    ``[ami_release] retention_max_parallel``, default 4."""
    from airflow.sdk.configuration import conf

    text = conf.get("ami_release", "retention_max_parallel", fallback="").strip()
    if not text:
        return DEFAULT_MAX_PARALLEL
    if not text.isdigit() or int(text) < 1:
        from amirelease.errors import ConfigError

        raise ConfigError(
            f"retention_max_parallel must be a whole number of at least 1, got {text!r}",
            resource="[ami_release] retention_max_parallel",
            fix="set it to how many account/region retention tasks may run at once (default 4), or unset it",
        )
    return int(text)


def mode_param() -> Param:
    """The manual run's explicit choice: policy / dry run / apply."""
    return Param(
        "policy",
        type="string",
        enum=list(MODES),
        values_display=MODES,
        title="What should this run do?",
        description=(
            "'As the policy file says' follows dry_run in include/policies/ami-retention.yaml. "
            "'Dry run' only writes the report. 'Apply' marks, unmarks and deregisters now, "
            "within the policy's per-run limit."
        ),
    )


def retention_tasks(*, mode: str | None) -> Any:
    """``policy_regions`` -> ``retention`` (mapped over accounts x regions) -> ``retention_summary``."""

    @task(task_display_name="Read the policy's accounts and regions")
    def policy_regions(policy_path: str | None = POLICY_PATH) -> list[dict[str, Any]]:
        """Load and validate the policy (a bad file fails here, naming the field); one entry per
        retention task: ``{"region_name": ...}`` or ``{"region_name": ..., "account": {...}}``."""
        from amirelease.retention.policy import load_policy

        return load_policy(policy_path).targets()

    @task(task_display_name="Which accounts and regions failed", trigger_rule="all_done")
    def retention_summary(targets: list[dict[str, Any]], results: Any) -> dict[str, Any]:
        """Compare the tasks the policy asked for with those that returned: name each that failed."""
        from amirelease.retention.summary import summarise

        return summarise(targets, [r for r in results if r is not None])

    targets = policy_regions()
    runs = AccountRetentionOperator.partial(
        task_id="retention",
        task_display_name="Retention in one account and region",
        policy_path=POLICY_PATH,
        mode=mode,
        aws_conn_id=DEFAULT_AWS_CONN_ID,
        # the deployment's one retry policy ([ami_release] aws_retry_mode / aws_max_attempts, retry.py)
        botocore_config=policy().botocore_config(),
        # paced (below), a first run of a large account takes long: AWS lets EnableImageDeprecation
        # (one per new mark) through at 5 a second; 5,000 AMIs' first run took 891 s (bench)
        execution_timeout=timedelta(minutes=60),
        max_active_tis_per_dagrun=max_parallel(),
        # its EC2 calls keep to a share of the account's API budget ([ami_release] retention_api_share)
        on_execute_callback=pace_retention,
    ).expand_kwargs(targets)
    retention_summary(targets, runs.output)  # type: ignore[arg-type]  # XComArgs, resolved at run time
    return runs
