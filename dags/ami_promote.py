"""
### Promote a release to the app's next stage

For apps whose release definition lists **stages** (e.g. `staging`, then `production`):
`ami_release` bakes once and releases to the first stage; once a stage is verified, its
`next_stage` task starts this DAG for the next one. The **same AMI** is applied and refreshed
there, after a **release manager approves** at the `approve` task (Airflow UI: *Required
Actions*, or the task's page). No answer before the stage's `approval.timeout_minutes` counts as
a rejection. A rejection changes nothing in that stage and is recorded with who and why.

**Fill in** (only to promote by hand, e.g. after a rejection): the **application**, the
**release id** (the Releases page shows it) and the **stage**. Refused before anything changes
when the release was not verified in the stage before, was rolled back, or a newer release
was verified there since.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from amirelease.access import RELEASE_MANAGERS_TRIGGER
from amirelease.constants import DagIds
from amirelease.pipeline import DEFAULT_ARGS, PROMOTE_DOC, STAGE_PATTERN, app_param, promote_pipeline, until_stage_param

with DAG(
    dag_id=DagIds.PROMOTE,
    description="Promote a verified release to the app's next stage, behind an approval",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=16,
    tags=["ami", "release", "stages"],
    access_control=RELEASE_MANAGERS_TRIGGER,  # who may trigger and answer the gate: plugins/amirelease/access.py
    default_args=DEFAULT_ARGS,
    params={
        "app": app_param(),
        "release_id": Param(
            "",
            type="string",
            pattern=r"^[A-Za-z0-9.-]{1,128}$",
            title="Release id",
            description="The release to promote, e.g. demo-web-1.4.2-20261205t101500z (the Releases page shows it)",
        ),
        "stage": Param(
            "",
            type="string",
            pattern=STAGE_PATTERN,
            title="Stage",
            description="The stage to promote it to, e.g. production (the one after where it was verified)",
        ),
        "until_stage": until_stage_param(),
        "emergency": Param(
            False,
            type="boolean",
            title="Emergency: pass the gate without waiting",
            description="Set by an emergency rollback (ami_rollback). Only release managers can trigger this DAG.",
        ),
    },
    doc_md=__doc__ + "\n### Steps\n" + PROMOTE_DOC,
) as dag:
    promote_pipeline(
        app="{{ params.app }}",
        release_id="{{ params.release_id }}",
        stage="{{ params.stage }}",
        triggered_by="{{ dag_run.triggering_user_name or dag_run.run_type }}",
    )
