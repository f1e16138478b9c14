"""The ``ami_drift`` DAG's wiring (the DAG file stays thin): targets -> one mapped read-only
plan per app × region, on the queue of the app's toolchain (the workers with Terraform) ->
report. No I/O at parse time beyond listing the catalog's toolchains (local files)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk.configuration import conf

from amirelease.callbacks import remember_failure
from amirelease.catalog_index import toolchains
from amirelease.drift.operators import DriftPlanOperator, DriftReportOperator, DriftTargetsOperator, task_id_for

DEFAULT_SCHEDULE = "@hourly"


def schedule() -> str:
    """[ami_release] drift_schedule (a cron expression or preset; default hourly)."""
    return conf.get("ami_release", "drift_schedule", fallback="").strip() or DEFAULT_SCHEDULE


def drift_tasks() -> tuple[Any, Any]:
    """Create the drift tasks in the current DAG; return (the plan tasks, the report)."""
    plans = []
    for chain in toolchains():
        targets = DriftTargetsOperator(task_id=task_id_for(chain, "targets"), toolchain=chain)
        plans.append(
            DriftPlanOperator.partial(
                task_id=task_id_for(chain),
                queue=chain,  # one mapped task instance per app × region, on this toolchain's workers
                execution_timeout=timedelta(minutes=30),
                on_failure_callback=remember_failure,
            ).expand(target=targets.output)
        )
    report = DriftReportOperator(
        task_id="report",
        results=[p.output for p in plans],
        trigger_rule="all_done",  # report what the plans found, also when one of them failed
    )
    return plans, report
