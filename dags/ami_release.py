"""
### Release an application

Bakes a **new AMI** of the chosen version from today's vendor image with the app's Chef
cookbooks, smoke-tests one instance of it, applies the app's **Terraform** definition with it
(launch template, group, target group, alarms…), replaces every instance through an
**instance refresh** and verifies the result. The release's exact inputs (catalog entry,
cookbooks, Packer files, Terraform module) are kept with its ledger record, so it can be
re-released exactly by `ami_rollback`.

**Fill in:** the **application**, the **version** (e.g. `1.4.2` or `2.0.0-rc.1`), the **git
ref** to release (needed for an app whose AMI project lives in its own git repository: a tag,
branch or full commit, resolved to one commit before anything is created; for an app defined
in the central catalog it is only recorded) and optional release notes. Bad input is refused
before anything is created. A second release of the same app waits at `release_lock` until the first ends.

**A version is released once.** A version that already has a succeeded release (or that another run is
releasing right now) is refused before anything is built, naming that release. To bring it back use
`ami_rollback` with it as the target; to bake it again on purpose (today's base image, a security patch) tick
**rebuild** and give a reason: it is recorded as a *rebuild* of that release. A version whose releases all
failed may simply be released again.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from amirelease.access import RELEASE_MANAGERS_TRIGGER
from amirelease.catalog_index import VERSION_PATTERN
from amirelease.constants import GIT_REF_PATTERN, MAX_NOTES, DagIds
from amirelease.pipeline import DEFAULT_ARGS, PIPELINE_DOC, app_param, release_pipeline

with DAG(
    dag_id=DagIds.RELEASE,
    description="Release an application version as a new AMI, with its Terraform definition",
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
            description="MAJOR.MINOR.PATCH in plain digits, with an optional -prerelease: e.g. 1.4.2 or 2.0.0-rc.1",
        ),
        "git_ref": Param(
            None,
            type=["null", "string"],
            pattern=GIT_REF_PATTERN,
            title="Git ref",
            description="Tag, branch or full commit of the app's repository to release, e.g. v1.4.2 (needed for apps "
            "whose AMI project lives in git; for apps defined in the central catalog it is only recorded)",
        ),
        "notes": Param(None, type=["null", "string"], maxLength=MAX_NOTES, title="Release notes (optional)"),
        "rebuild": Param(
            False,
            type="boolean",
            title="Rebuild a released version on purpose",
            description="A version is released once. Tick this (and give a reason) to bake a version that was "
            "already released again, e.g. on today's base image for a security patch. To bring an earlier release "
            "back, use ami_rollback instead.",
        ),
        "rebuild_reason": Param(
            None,
            type=["null", "string"],
            maxLength=MAX_NOTES,
            title="Rebuild reason (with rebuild)",
            description="Why the same version is baked again, e.g. 'CVE-2026-1234: today's base image'. Kept in "
            "the ledger.",
        ),
    },
    doc_md=__doc__ + "\n### Steps\n" + PIPELINE_DOC,
) as dag:
    release_pipeline(
        app="{{ params.app }}",
        version="{{ params.version }}",
        git_ref="{{ params.git_ref or '' }}",
        notes="{{ params.notes or '' }}",
        rebuild="{{ params.rebuild }}",
        rebuild_reason="{{ params.rebuild_reason or '' }}",
        triggered_by="{{ dag_run.triggering_user_name or dag_run.run_type }}",
        roll_forward=True,  # a failed release of an app that opts in starts ami_rollback (never a rollback's)
    )
