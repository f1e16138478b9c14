"""
### AMI retention

Every 5 minutes, per region named in `include/policies/ami-retention.yaml`:

1. **policy_regions** reads and validates the policy (jsonschema; a bad file fails
   here, naming the file and field, and nothing is changed).
2. **retention** (mapped, one task per region) lists the account's own AMIs, live
   instances, Auto Scaling groups with the launch-template versions they use, and
   launch configurations; then
   - **marks** AMIs older than 60 days that nothing uses or protects
     (`maid_status = Resource does not meet policy: deregister@YYYY/MM/DD`, due 7 days later,
     Cloud Custodian's format: existing Custodian marks are honoured);
   - **unmarks** marked AMIs that became ineligible (in use again, protected, held);
   - **deregisters** marked AMIs whose mark is due and that are still eligible,
     and deletes the snapshots only they used.

Protected, never marked or deregistered: tag `RetainIndefinitely=true` (exactly;
case-sensitive key and value), tag `ForensicHold` (any non-empty value; set by a
rollback), AMIs used by existing instances, by launch-template versions that Auto
Scaling groups use, or by launch configurations.

"Now" is the run's data-interval end (its logical time), not the wall clock.
A run that would deregister more than `max_deregistrations_per_run` in a region
changes nothing there and fails (safety brake). The full decision table is in each
task's log; the XCom carries counts and a bounded list.

**Trigger with params**: `dry_run` = true to only report, false to force applying,
empty to follow the policy. See `docs/retention.md`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param, task

from amirelease.access import RELEASE_MANAGERS_READ
from amirelease.operators.retention import AmiRetentionOperator

POLICY_PATH = None  # None: include/policies/ami-retention.yaml next to the plugins

with DAG(
    dag_id="ami_retention",
    description="Mark, unmark and deregister old unused AMIs (Custodian-compatible marks)",
    schedule="*/5 * * * *",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=30),
    render_template_as_native_obj=True,
    doc_md=__doc__,
    tags=["ami", "retention"],
    access_control=RELEASE_MANAGERS_READ,  # who may trigger: plugins/amirelease/access.py
    default_args={"owner": "platform", "retries": 0},
    params={
        "dry_run": Param(
            None,
            type=["null", "boolean"],
            title="Dry run",
            description="true: report only; false: apply; empty: as the policy file says.",
        ),
    },
) as dag:

    @task
    def policy_regions(policy_path: str | None = POLICY_PATH) -> list[str]:
        """Load and validate the policy; the regions to map over."""
        from amirelease.retention.policy import load_policy

        return list(load_policy(policy_path).regions)

    AmiRetentionOperator.partial(
        task_id="retention",
        policy_path=POLICY_PATH,
        dry_run="{{ params.dry_run }}",
        aws_conn_id="aws_default",
        botocore_config={"retries": {"mode": "standard", "max_attempts": 10}},
        execution_timeout=timedelta(minutes=20),
    ).expand(region_name=policy_regions())
