"""
### Drift: is what runs still what was released? (scheduled, hourly)

For every app with a Terraform module and a succeeded release, in each region: a **read-only**
`terraform plan -detailed-exitcode -lock=false` of the **live release's** exact inputs (its
bundle, its AMI, its variables) against what runs in AWS now. Nothing is applied, the state is
not written and no state lock is taken. An app whose release is running is checked next time.

**What it reports**: the resources changed outside a release and the attributes that changed
(e.g. `aws_autoscaling_group.web: max_size: 6 -> 10`), since when (first seen), in the `report`
task's log, in `drift/<app>/<region>.json` in the ledger bucket, on the Releases page, and as a
"drift found" notification when drift appears or changes (the app's `notify:` settings). A plan
without drift clears the record; the next release (or rollback) re-applies the module and so
clears the drift. See `docs/drift.md`.

Schedule: `[ami_release] drift_schedule` (default hourly).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from amirelease.access import RELEASE_MANAGERS_READ
from amirelease.constants import DEFAULT_AWS_CONN_ID, DagIds
from amirelease.drift.wiring import drift_tasks, schedule

with DAG(
    dag_id=DagIds.DRIFT,
    dag_display_name="Drift: live resources vs their release (hourly)",
    description="Read-only Terraform plan of each app's live release against AWS; reports drift",
    schedule=schedule(),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=50),
    doc_md=__doc__,
    tags=["ami", "drift"],
    access_control=RELEASE_MANAGERS_READ,
    default_args={"owner": "platform", "retries": 0, "aws_conn_id": DEFAULT_AWS_CONN_ID},
) as dag:
    drift_tasks()
