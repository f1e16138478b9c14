"""The tasks both retention DAGs run (``ami_retention`` on a schedule, ``ami_retention_manual``
on demand): read the policy's regions, then one retention task per region.

Nothing here touches AWS at import or parse time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, task

from amirelease.operators.retention import MODES, AmiRetentionOperator
from amirelease.retention.pacing import pace_retention
from amirelease.retry import policy

DEFAULT_SCHEDULE = "*/5 * * * *"
POLICY_PATH = None  # None: [ami_release] retention_policy, else include/policies/ami-retention.yaml


def schedule() -> str:
    """The scheduled DAG's cron: ``[ami_release] retention_schedule``, default every 5 minutes."""
    from airflow.sdk.configuration import conf

    return conf.get("ami_release", "retention_schedule", fallback="").strip() or DEFAULT_SCHEDULE


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
    """``policy_regions`` -> ``retention`` (mapped over the regions), in the current DAG."""

    @task(task_display_name="Read the policy's regions")
    def policy_regions(policy_path: str | None = POLICY_PATH) -> list[str]:
        """Load and validate the policy (a bad file fails here, naming the field); its regions."""
        from amirelease.retention.policy import load_policy

        return list(load_policy(policy_path).regions)

    return AmiRetentionOperator.partial(
        task_id="retention",
        task_display_name="Retention in one region",
        policy_path=POLICY_PATH,
        mode=mode,
        aws_conn_id="aws_default",
        # the deployment's one retry policy ([ami_release] aws_retry_mode / aws_max_attempts, retry.py)
        botocore_config=policy().botocore_config(),
        execution_timeout=timedelta(minutes=20),
        # its EC2 calls keep to a share of the account's API budget ([ami_release] retention_api_share)
        on_execute_callback=pace_retention,
    ).expand(region_name=policy_regions())
