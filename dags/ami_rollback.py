"""ami_rollback: roll back by rolling forward.

The recorded inputs of an earlier good release (version, run list, cookbook versions,
git ref) are baked again into a **new** AMI from today's vendor base image and rolled out
through exactly the release tasks. The AMI being replaced is kept, under a forensic hold.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from amirelease.access import RELEASE_MANAGERS_TRIGGER
from amirelease.operators.rollback import ForensicHoldOperator, ResolveRollbackTargetOperator
from amirelease.pipeline import DEFAULT_ARGS, PIPELINE_DOC, app_param, release_pipeline

RESOLVED = "ti.xcom_pull(task_ids='resolve_target')"

with DAG(
    dag_id="ami_rollback",
    description="Roll back an app by re-releasing an earlier good release as a new AMI",
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
            minLength=10,
            maxLength=500,
            title="Reason (required)",
            description="What is wrong with the current release. Kept in the release ledger.",
        ),
        "target": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9.-]{1,128}$",
            title="Target release (optional)",
            description="Empty: the last good release before the current one. Or a version (1.4.2) or a release id.",
        ),
        "forensic_hold": Param(
            True,
            type="boolean",
            title="Place a forensic hold on the AMI being replaced",
            description="The retention DAG will not deregister a held AMI until the hold is released.",
        ),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__
    + """
### Trigger (for the person on call)
Pick the **app**, write the **reason**, leave **target** empty for the last good release.
`resolve_target` refuses clearly when there is nothing to roll back to.

### Tasks
`resolve_target` → `forensic_hold` → the release tasks:
"""
    + PIPELINE_DOC,
) as dag:
    resolve = ResolveRollbackTargetOperator(
        task_id="resolve_target",
        app="{{ params.app }}",
        target="{{ params.target or '' }}",
        reason="{{ params.reason }}",
    )
    hold = ForensicHoldOperator(
        task_id="forensic_hold",
        resolved=resolve.output,
        hold="{{ params.forensic_hold }}",
        reason="{{ params.reason }}",
    )
    first, _last = release_pipeline(
        app="{{ %s['app'] }}" % RESOLVED,
        version="{{ %s['version'] }}" % RESOLVED,
        git_ref="{{ %s['git_ref'] }}" % RESOLVED,
        notes="rollback: {{ params.reason }}",
        re_release_of="{{ %s['target_release_id'] }}" % RESOLVED,
        run_list="{{ %s['run_list'] }}" % RESOLVED,
        triggered_by="{{ dag_run.triggering_user_name or dag_run.run_type }}",
    )
    resolve >> hold >> first
