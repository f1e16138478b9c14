"""One timed run for bench/retention_bench.py, in a process of its own (not the sandbox's).

    <project python> bench/retention_bench_run.py ours <policy.yaml> <out.json>
    <c7n venv python> bench/retention_bench_run.py custodian <policy.yaml> <out dir> <out.json>

Imports happen first; the clock covers the run only: ``AmiRetentionOperator.execute`` for
ours, ``custodian run`` (``c7n.cli.main``) for Cloud Custodian. Both read the sandbox
through the environment (AWS_ENDPOINT_URL / the Airflow AWS connection). The custodian
mode imports nothing from this project (it runs in Custodian's own virtualenv).

``RETENTION_BENCH_PROFILE=<file>`` in the environment: ours runs under cProfile, its stats
written to that file (to see where a run's time goes: waiting on the server or working).
``RETENTION_BENCH_TIMELINE=<file>``: every AWS call of ours (thread, operation, start and end,
seconds from the run's start) as JSON lines in that file (to see which calls are on the critical path).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def ours(policy_path: str, out: str) -> None:
    repo = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(repo / "plugins"), str(repo)]
    # What an Airflow worker has loaded before it calls execute() (the task runner is that process);
    # without it, the first connection lookup imports it (2-3 s) inside the timed run.
    import airflow.sdk.execution_time.task_runner  # noqa: F401

    from amirelease.operators.retention import AmiRetentionOperator
    from amirelease.retention.pacing import pace_retention

    op = AmiRetentionOperator(task_id="retention", region_name="us-east-1", policy_path=policy_path)
    # as the task does it (retention_pipeline.py's on_execute_callback): paced unless retention_api_share = off
    pace_retention({"task": op})
    timeline = os.environ.get("RETENTION_BENCH_TIMELINE")
    calls: list[tuple[str, str, float, float]] = []
    if timeline:
        import threading

        from botocore.client import BaseClient

        original = BaseClient._make_api_call

        def timed(self: BaseClient, operation: str, params: dict[str, object]) -> object:
            began = time.perf_counter()
            try:
                return original(self, operation, params)
            finally:
                calls.append((threading.current_thread().name, operation, began, time.perf_counter()))

        BaseClient._make_api_call = timed  # type: ignore[method-assign]
    now = datetime.now(UTC)
    context = {"data_interval_end": now, "logical_date": now, "run_id": f"bench__{now:%Y%m%dT%H%M%S%f}"}
    start = time.perf_counter()
    error = None
    profile_to = os.environ.get("RETENTION_BENCH_PROFILE")  # a path: cProfile the run into it
    profiler = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        summary = op.execute(context)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - the bench reports any failure of the run
        summary, error = {}, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_to)
    if timeline:
        with open(timeline, "w") as lines:
            for thread, operation, began, ended in calls:
                row = {"thread": thread, "op": operation, "start": began - start, "end": ended - start}
                lines.write(json.dumps(row) + "\n")
    pacer = getattr(op, "retention_pacer", None)
    pacing = pacer.summary() if pacer is not None else None
    Path(out).write_text(
        json.dumps({"seconds": seconds, "summary": summary, "error": error, "pacing": pacing}, default=str)
    )


def custodian(policy_path: str, out_dir: str, out: str) -> None:
    from c7n.cli import main

    sys.argv = ["custodian", "run", "--cache-period", "0", "-s", out_dir, "--region", "us-east-1", policy_path]
    start = time.perf_counter()
    error = None
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            error = f"exit {exc.code}"
    seconds = time.perf_counter() - start
    resources = {}
    for meta in Path(out_dir).glob("*/resources.json"):
        resources[meta.parent.name] = len(json.loads(meta.read_text()))
    Path(out).write_text(json.dumps({"seconds": seconds, "resources": resources, "error": error}))


if __name__ == "__main__":
    if sys.argv[1] == "ours":
        ours(sys.argv[2], sys.argv[3])
    else:
        custodian(sys.argv[2], sys.argv[3], sys.argv[4])
