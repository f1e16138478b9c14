"""ami_release: bake -> smoke test -> roll out -> verify one application version.

Wiring only; the behaviour lives in plugins/amirelease. Nothing here touches AWS or Vault.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from amirelease.access import RELEASE_MANAGERS_TRIGGER
from amirelease.catalog import VERSION_PATTERN
from amirelease.pipeline import DEFAULT_ARGS, PIPELINE_DOC, app_param, release_pipeline

with DAG(
    dag_id="ami_release",
    description="Release an application version as a new AMI and roll it out to its Auto Scaling groups",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=16,  # per-app serialisation is the release_lock task's job, not the DAG's
    tags=["ami", "release"],
    access_control=RELEASE_MANAGERS_TRIGGER,  # who may trigger: plugins/amirelease/access.py
    default_args=DEFAULT_ARGS,
    params={
        "app": app_param(),
        "version": Param(
            "",
            type="string",
            pattern=VERSION_PATTERN,
            minLength=5,
            maxLength=64,
            title="Version",
            description="Semantic version of the release, e.g. 1.4.2 or 2.0.0-rc.1",
        ),
        "git_ref": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9._/-]{1,128}$",
            title="Git ref (optional)",
            description="Commit, tag or branch of the app's cookbooks this release was cut from",
        ),
        "notes": Param(None, type=["null", "string"], maxLength=500, title="Release notes (optional)"),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__
    + """
### Trigger
Choose the **app** and type the **version**. Preflight checks the catalog, the groups, the
vendor base image, the ledger bucket and the Vault secrets before anything is created.
A second release of the same app waits at `release_lock` until the first one ends.

### Tasks
"""
    + PIPELINE_DOC,
) as dag:
    release_pipeline(
        app="{{ params.app }}",
        version="{{ params.version }}",
        git_ref="{{ params.git_ref or '' }}",
        notes="{{ params.notes or '' }}",
        triggered_by="{{ dag_run.triggering_user_name or dag_run.run_type }}",
    )
