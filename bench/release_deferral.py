"""Benchmark: worker-slot time of a release with a deferred vs a blocking refresh wait.

Runs two real releases through `airflow standalone` against the sandbox, whose instance
refresh is slowed down to take a few minutes: once with the wait deferred to the triggerer
(the default), once blocking in a worker slot. While each run goes, the task instances are
sampled through the REST API every 0.5 s; worker-slot seconds = sampled time in state
'running' (a deferred task holds no slot). Prints, per mode: wall time of the DAG run,
worker-slot seconds and their share of wall time, time the refresh took in AWS, and the
pipeline's own overhead (wall time not spent waiting for the refresh).

    .venv/bin/python bench/release_deferral.py [--batch-seconds 45]
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

from sandbox.demo import sandbox_with_airflow  # noqa: E402


def _ts(s: str | None) -> float | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def one_run(deferrable: bool, batch_seconds: float, port: int, version: str) -> dict:
    overrides = {
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": str(deferrable),
        "AIRFLOW__AMI_RELEASE__REFRESH_POLL_SECONDS": "10",
    }
    with sandbox_with_airflow(port, batch_seconds, env_overrides=overrides, quiet=True) as (rt, af):
        af.wait_for_dag("ami_release")
        af.api("PATCH", "/api/v2/dags/ami_release", {"is_paused": False})
        run_id = af.api(
            "POST",
            "/api/v2/dags/ami_release/dagRuns",
            {"logical_date": None, "conf": {"app": "demo-web", "version": version}},
        )["dag_run_id"]
        busy, states_seen, last = 0.0, set(), time.monotonic()
        per_task: dict[str, float] = {}
        while True:
            tis = af.api("GET", f"/api/v2/dags/ami_release/dagRuns/{run_id}/taskInstances")["task_instances"]
            now = time.monotonic()
            running = [t for t in tis if t["state"] == "running"]
            busy += (now - last) * len(running)
            for t in running:
                per_task[t["task_id"]] = per_task.get(t["task_id"], 0.0) + (now - last)
            last = now
            states_seen |= {(t["task_id"], t["state"]) for t in tis}
            run = af.api("GET", f"/api/v2/dags/ami_release/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                break
            time.sleep(0.5)
        wall = _ts(run["end_date"]) - _ts(run["start_date"])
        import boto3

        asg = boto3.client(
            "autoscaling",
            region_name="us-east-1",
            endpoint_url=rt.aws.endpoint_url,
            aws_access_key_id="t",
            aws_secret_access_key="t",
        )
        ref = asg.describe_instance_refreshes(AutoScalingGroupName="demo-web-asg")["InstanceRefreshes"][0]
        refresh = (ref["EndTime"] - ref["StartTime"]).total_seconds()
        return {
            "mode": "deferred" if deferrable else "blocking",
            "state": run["state"],
            "wall": wall,
            "slot": busy,
            "refresh": refresh,
            "overhead": wall - refresh,
            "deferred_seen": ("wait_for_refresh", "deferred") in states_seen,
            "per_task": {k: round(v, 1) for k, v in sorted(per_task.items(), key=lambda kv: -kv[1])},
        }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-seconds", type=float, default=45.0, help="sandbox warm-up per refresh batch")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--modes", default="deferred,blocking")
    args = p.parse_args()
    modes = args.modes.split(",")
    rows = [one_run(m == "deferred", args.batch_seconds, args.port, f"9.0.{i}") for i, m in enumerate(modes)]
    print(
        f"\n{'mode':<9} {'state':<8} {'wall s':>7} {'refresh s':>9} {'slot s':>7} {'slot/wall':>9} {'overhead s':>10}  deferred?"
    )
    for r in rows:
        print(
            f"{r['mode']:<9} {r['state']:<8} {r['wall']:>7.1f} {r['refresh']:>9.1f} {r['slot']:>7.1f} {100 * r['slot'] / r['wall']:>8.1f}% {r['overhead']:>10.1f}  {r['deferred_seen']}"
        )
    for r in rows:
        print(f"{r['mode']} worker-slot seconds by task: {r['per_task']}")
    return 0 if all(r["state"] == "success" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
