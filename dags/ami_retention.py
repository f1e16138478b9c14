"""
### AMI retention (scheduled)

Every 5 minutes, for each region in the retention policy (and each account, when the policy
names accounts: one task per account and region, at most `retention_max_parallel` at once),
old AMIs that nothing uses are marked, and deregistered a week later if still unused:

- **mark**: own AMIs more than 60 days old, not used by any existing instance or by a
  launch template / configuration an Auto Scaling group uses, not protected, get the tag
  `maid_status = Resource does not meet policy: deregister@YYYY/MM/DD` (Cloud Custodian's
  format; Custodian's marks are honoured);
- **unmark**: marked AMIs that became used or protected;
- **deregister**: marked AMIs whose date has come and that are still unused, with the
  snapshots only they used; at most `max_deregistrations_per_run` per run, oldest first;
  the rest are **deferred** to the next runs.

**Protected, never marked or deregistered**: tag `RetainIndefinitely=true` (exactly
that: case-sensitive key and value; the report warns about near misses such as
`retainindefinitely=true` or `RetainIndefinitely=True`), tag `ForensicHold` (set by a
rollback; the report shows `ForensicHoldReason`), AMIs in use.

**Stops, changing nothing**, when its view of the account looks wrong (a listing failed,
Auto Scaling's instances missing from EC2's listing, far fewer live instances than the
groups want): the run fails with the reason.

**The report** of every run: the task log of `retention`, and JSON/CSV in the ledger bucket
under `retention/reports/<region>/` (`latest.json` is the newest), or
`retention/reports/accounts/<account>/<region>/` per named account. **A failed account** (its
role cannot be assumed, its run stopped) does not stop the others; `retention_summary` names it
and fails the run.

**To run it now** (dry run or apply), trigger **`ami_retention_manual`**: this DAG only
runs on its schedule (manual runs of it are refused, so a run dated in the future can
neither act nor hold up the schedule). Pausing it stops retention. See `docs/retention.md`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from amirelease.access import RELEASE_MANAGERS_READ
from amirelease.constants import DagIds
from amirelease.retention_pipeline import retention_tasks, schedule

with DAG(
    dag_id=DagIds.RETENTION,
    dag_display_name="AMI retention (every 5 minutes)",
    description="Mark, unmark and deregister old unused AMIs (Custodian-compatible marks)",
    schedule=schedule(),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # Only the scheduler starts runs: no manual run (dated in the future or not) can act or
    # occupy the one active-run slot. Manual runs: the DAG ami_retention_manual.
    allowed_run_types=["scheduled"],
    dagrun_timeout=timedelta(minutes=75),  # a paced first run of a large account: see retention_pipeline.py
    render_template_as_native_obj=True,
    doc_md=__doc__,
    tags=["ami", "retention"],
    access_control=RELEASE_MANAGERS_READ,  # who may trigger: plugins/amirelease/access.py
    default_args={"owner": "platform", "retries": 0},
) as dag:
    retention_tasks(mode=None)
