"""Benchmark: worker-slot time of a release with a deferred vs a blocking refresh wait.

Runs real releases through `airflow standalone` against the sandbox (per mode: a first release
that creates the fleet with Terraform, not measured, then the measured one), whose instance
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
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

from sandbox.demo import sandbox_with_airflow  # noqa: E402


def _ts(s: str | None) -> float | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


TERRAFORM_LINE = re.compile(r"\(terraform (\w[\w-]*): ([0-9.]+) s, exit code")


def _terraform_seconds(af, run_id: str, task_ids: list[str]) -> dict[str, float]:
    """Seconds per Terraform command (init, validate, plan, apply) from the tasks' logs."""
    out: dict[str, float] = {}
    for task_id in task_ids:
        try:
            content = af.api("GET", f"/api/v2/dags/ami_release/dagRuns/{run_id}/taskInstances/{task_id}/logs/1")
        except Exception:  # noqa: BLE001 - a task that did not run has no log
            continue
        for command, seconds in TERRAFORM_LINE.findall(json.dumps(content)):
            out[command] = out.get(command, 0.0) + float(seconds)
    return out


def _follow(af, run_id: str) -> dict:
    while True:
        run = af.api("GET", f"/api/v2/dags/ami_release/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(1)


def one_run(deferrable: bool, batch_seconds: float, port: int, version: str) -> dict:
    overrides = {
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": str(deferrable),
        "AIRFLOW__AMI_RELEASE__REFRESH_POLL_SECONDS": "10",
    }
    with sandbox_with_airflow(port, batch_seconds, env_overrides=overrides, quiet=True) as (rt, af):
        af.wait_for_dag("ami_release")
        af.api("PATCH", "/api/v2/dags/ami_release", {"is_paused": False})
        # the app's first release creates its fleet (not measured); the measured one changes its image
        first = af.api(
            "POST",
            "/api/v2/dags/ami_release/dagRuns",
            {"logical_date": None, "conf": {"app": "demo-web", "version": "1.0.0"}},
        )["dag_run_id"]
        if _follow(af, first)["state"] != "success":
            return {"mode": "deferred" if deferrable else "blocking", "state": "first release failed"}
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
        tf_tasks = ["check_infrastructure", "apply_infrastructure"]
        terraform = _terraform_seconds(af, run_id, tf_tasks)
        return {
            "mode": "deferred" if deferrable else "blocking",
            "state": run["state"],
            "wall": wall,
            "slot": busy,
            "refresh": refresh,
            "overhead": wall - refresh,
            "deferred_seen": ("wait_for_refresh", "deferred") in states_seen,
            "per_task": {k: round(v, 1) for k, v in sorted(per_task.items(), key=lambda kv: -kv[1])},
            "terraform": {k: round(v, 1) for k, v in terraform.items()},
            "terraform_slot": sum(per_task.get(t, 0.0) for t in tf_tasks),
        }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-seconds", type=float, default=45.0, help="sandbox warm-up per refresh batch")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--modes", default="deferred,blocking")
    args = p.parse_args()
    modes = args.modes.split(",")
    rows = [one_run(m == "deferred", args.batch_seconds, args.port, f"9.0.{i}") for i, m in enumerate(modes)]
    head = ("mode", "state", "wall s", "refresh s", "slot s", "slot/wall", "overhead s", "deferred?")
    print("\n" + "  ".join(f"{h:>10}" for h in head))
    for r in rows:
        if "wall" not in r:
            print(f"{r['mode']:>10}  {r['state']}")
            continue
        cells = (
            r["mode"],
            r["state"],
            f"{r['wall']:.1f}",
            f"{r['refresh']:.1f}",
            f"{r['slot']:.1f}",
            f"{100 * r['slot'] / r['wall']:.1f}%",
            f"{r['overhead']:.1f}",
            str(r["deferred_seen"]),
        )
        print("  ".join(f"{c:>10}" for c in cells))
    for r in rows:
        print(f"{r['mode']} worker-slot seconds by task: {r.get('per_task')}")
    for r in rows:
        if "terraform" in r:
            print(
                f"{r['mode']} Terraform: {r['terraform_slot']:.1f} worker-slot s in check + apply "
                f"({100 * r['terraform_slot'] / r['wall']:.1f}% of the wall time, "
                f"{100 * r['terraform_slot'] / max(r['slot'], 0.1):.0f}% of all worker-slot time); "
                f"by command: {r['terraform']}"
            )
    return 0 if all(r["state"] == "success" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
