"""
### AMI retention, now (manual)

One retention run in every region (and account) of the policy, when you trigger it. Choose what it does:

- **As the policy file says** (default): what the scheduled run would do now.
- **Dry run**: decide and write the report, change nothing.
- **Apply**: mark, unmark and deregister now (at most `max_deregistrations_per_run`
  deregistrations per region; the rest are deferred to the next runs).

This DAG has no schedule: unpausing it (the form's "Unpause on trigger") starts
nothing but the run you trigger, and never the scheduled `ami_retention`.
Runs decide as of the wall clock, never as of a future date.

**The report**: the task log of `retention`, and JSON/CSV in the ledger bucket under
`retention/reports/<region>/` (per named account: `retention/reports/accounts/<account>/<region>/`);
`retention_summary` names any account/region that failed. See `docs/retention.md`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from amirelease.access import RELEASE_MANAGERS_READ
from amirelease.constants import DagIds
from amirelease.retention_pipeline import mode_param, retention_tasks

with DAG(
    dag_id=DagIds.RETENTION_MANUAL,
    dag_display_name="AMI retention, now (dry run or apply)",
    description="One retention run on demand: as the policy says, dry run, or apply",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=75),  # a paced first run of a large account: see retention_pipeline.py
    render_template_as_native_obj=True,
    doc_md=__doc__,
    tags=["ami", "retention"],
    access_control=RELEASE_MANAGERS_READ,  # who may trigger: plugins/amirelease/access.py (admins)
    default_args={"owner": "platform", "retries": 0},
    params={"mode": mode_param()},
) as dag:
    retention_tasks(mode="{{ params.mode }}")
