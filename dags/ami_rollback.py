"""
### Roll back an application (by rolling forward)

Nobody swaps an old AMI back in. This **re-releases an earlier good release exactly**: its
recorded bundle (catalog entry, cookbooks, Packer files, Terraform module) is baked again into
a **new** AMI on today's vendor image and its Terraform definition is applied again, so the
environment is defined as it was. The release being replaced is recorded as **rolled back**
and, unless you untick it, its AMI is kept under a **forensic hold**.

**Fill in:** the **application** and the **reason** (kept in the ledger: include the incident
number). Leave **target** empty for the newest good release that is not the one running now
and was never rolled back, or type a version (`1.4.2`) or a release id. Rolling back to a
release that was itself rolled back needs the confirmation box.

**Decided under the lock.** `preflight` proposes the target; once this run holds the app's release lock,
`mark_rolled_back` checks that what runs now is still what you asked to roll back. If a release
went live in between, the rollback stops there — nothing marked or held, and nothing its bake
built is kept — and says which release is live now: trigger again to roll that one back.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from amirelease.access import RELEASE_MANAGERS_TRIGGER
from amirelease.constants import MAX_NOTES, MIN_REASON, RELEASE_REF_PATTERN, DagIds, TaskIds
from amirelease.operators.rollback import MarkRolledBackOperator
from amirelease.pipeline import DEFAULT_ARGS, PIPELINE_DOC, app_param, release_pipeline, until_stage_param

STEPS = (
    "\n### Steps\nThe release steps (`preflight` resolves the target first), with `mark_rolled_back` after "
    "`release_lock` and "
    "`check_infrastructure`, beside the bake:\n"
)

with DAG(
    dag_id=DagIds.ROLLBACK,
    description="Roll back an app by re-releasing an earlier good release exactly, as a new AMI",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=16,
    tags=["ami", "rollback"],
    access_control=RELEASE_MANAGERS_TRIGGER,  # who may trigger: plugins/amirelease/access.py
    default_args=DEFAULT_ARGS,
    params={
        "app": app_param(),
        "reason": Param(
            "",
            type="string",
            minLength=MIN_REASON,
            maxLength=MAX_NOTES,
            title="Reason (required)",
            description="What is wrong with the current release, e.g. 'INC-123: 5xx since 1.2.0'. Kept in the ledger.",
        ),
        "target": Param(
            None,
            type=["null", "string"],
            pattern=RELEASE_REF_PATTERN,
            title="Target release (optional)",
            description="Empty: the newest good release that is not running now and was never rolled back. "
            "Or a version (1.4.2) or a release id.",
        ),
        "confirm_rolled_back": Param(
            False,
            type="boolean",
            title="Roll back to a rolled-back release on purpose",
            description="Only needed when the target you typed was itself rolled back.",
        ),
        "replaces": Param(
            None,
            type=["null", "string"],
            pattern=RELEASE_REF_PATTERN,
            title="Replaces (set by the automatic roll-forward)",
            description="Leave empty. A release that failed after it reached the fleet sets it to its own release id "
            "when its app opts in to automatic rollback: that release is marked rolled back and held.",
        ),
        "until_stage": until_stage_param(),
        "emergency": Param(
            False,
            type="boolean",
            title="Emergency: skip the later stages' gates",
            description="Apps with stages: the re-release goes through every stage without waiting for approvals "
            "(the reason above is recorded). Only release managers can trigger a rollback.",
        ),
        "forensic_hold": Param(
            True,
            type="boolean",
            title="Keep the replaced AMI under a forensic hold",
            description="Retention will not deregister a held AMI until the hold is lifted.",
        ),
    },
    doc_md=__doc__ + STEPS + PIPELINE_DOC,
) as dag:
    # re-checks, under the app's lock, the target preflight resolved (its XCom rollback_target)
    mark = MarkRolledBackOperator(task_id=TaskIds.MARK_ROLLED_BACK, hold="{{ params.forensic_hold }}")
    release_pipeline(  # mark_rolled_back decides under the app's lock: after release_lock, before bake
        app="{{ params.app }}",
        notes="rollback: {{ params.reason }}",
        triggered_by="{{ dag_run.triggering_user_name or dag_run.run_type }}",
        rollback={  # preflight resolves these into the release to bake again (rollback.resolve_target)
            "target": "{{ params.target or '' }}",
            "reason": "{{ params.reason }}",
            "confirm_rolled_back": "{{ params.confirm_rolled_back }}",
            "replaces": "{{ params.replaces or '' }}",
        },
        under_lock=mark,
    )
