"""Benchmark: a release's and a rollback's critical path, two checkouts side by side (issue 21).

Runs the same scenario on each checkout named by ``--trees`` (e.g. a git worktree of the
commit before a change, and this one), alternating, round after round, in one invocation, each
with its own sandbox and `airflow standalone` (LocalExecutor, SQLite) started from that
checkout's own code: a first release of demo-web that creates its fleet (not measured), a
measured release, then a measured rollback (``ami_rollback``: re-release of the first). While a
run goes, its task instances are sampled through the REST API every 0.5 s.

Per run it prints: wall time; the critical path (the chain of tasks that ended last, walked
back from ``record``) and its task time; worker-slot seconds (sampled time in state
``running``); Packer's time (the bake's own log line); Terraform's command time, in all and on
the critical path (the ``(terraform <cmd>: N s`` log lines); the refresh's time in AWS; the
number of task instances and of task starts (tries + reschedules); and *overhead* = wall −
(Packer + Terraform on the critical path + refresh), and *overhead_cp*, the same with Packer
subtracted only when the bake is on the critical path; in the JSON per run, ``critical_steps``
(per task on the critical path: the gap since the task before it ended, and its run time) and
``refresh_end_to_wait_end`` (AWS's end of the refresh -> the wait task's end: the poll and the
resume), ``after_record`` (the teardowns that end the run after ``record``: gap and run time each) and
``run_end_after_record``. Then the DAG files' parse time beyond
Airflow's own import (every file in dags/, min of 5 fresh processes), and the ratios of the last
tree to the first. ``--parse-only`` prints only the parse times (seconds, no Airflow run).

    .venv/bin/python bench/critical_path.py --trees /tmp/base,. [--rounds 1] [--batch-seconds 20]
    .venv/bin/python bench/critical_path.py --trees /tmp/base,. --parse-only
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TERRAFORM_LINE = re.compile(r"\(terraform (\w[\w-]*): ([0-9.]+) s, exit code")
PACKER_LINE = re.compile(r"packer finished in ([0-9.]+)s")
TOOLCHAIN = ("check_infrastructure", "apply_infrastructure", "bake")


def _ts(s: str | None) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else 0.0


# -- the child: one checkout, one sandbox, one Airflow ---------------------------------------------
def _logs(af, dag_id: str, run_id: str, ti: dict) -> str:
    text = []
    for n in range(1, max(int(ti.get("try_number") or 1), 1) + 1):
        try:
            content = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{n}")
        except Exception:  # noqa: BLE001 - a task that never ran has no log
            continue
        text.append(json.dumps(content))
    return "\n".join(text)


def _measure(af, rt, dag_id: str, conf: dict) -> dict:
    run_id = af.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
    busy, last = 0.0, time.monotonic()
    while True:
        tis = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        now = time.monotonic()
        busy += (now - last) * sum(1 for t in tis if t["state"] == "running")
        last = now
        run = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            break
        time.sleep(0.5)
    tis = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    tasks = {t["task_id"]: t for t in af.api("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"]}
    upstream: dict[str, set[str]] = {k: set() for k in tasks}
    for k, t in tasks.items():
        for d in t.get("downstream_task_ids", []):
            upstream.setdefault(d, set()).add(k)
    spans: dict[str, tuple[float, float]] = {}
    for t in tis:
        if t.get("start_date") and t.get("end_date"):
            s, e = _ts(t["start_date"]), _ts(t["end_date"])
            old = spans.get(t["task_id"])
            spans[t["task_id"]] = (min(s, old[0]), max(e, old[1])) if old else (s, e)
    chain, cur = [], "record"
    while cur in spans:
        chain.append(cur)
        ups = [u for u in upstream.get(cur, ()) if u in spans]
        cur = max(ups, key=lambda u: spans[u][1]) if ups else ""
    chain.reverse()
    log_dir = os.environ.get("CRITICAL_PATH_LOG_DIR")  # --log-dir: the path's task logs, to read the seconds in them
    if log_dir:
        for t in tis:
            if t["task_id"] in chain and t.get("map_index", -1) == -1:
                Path(log_dir, f"{dag_id}.{t['task_id']}.log").write_text(_logs(af, dag_id, run_id, t))
    terraform: dict[str, float] = {}
    terraform_crit = 0.0
    packer = 0.0
    starts = 0
    for t in tis:
        if t["state"] in ("removed", None) or not t.get("start_date"):
            continue
        # a task that ran and then skipped was started; one skipped by an upstream task (record
        # skips the teardowns with nothing to do) never was: its try_number stays 0
        starts += int(t.get("try_number") or 0)
        if t["state"] == "skipped":
            continue
        if t["task_id"].split(".")[0] not in ("bake", "check_infrastructure", "apply_infrastructure"):
            continue
        log = _logs(af, dag_id, run_id, t)
        for command, seconds in TERRAFORM_LINE.findall(log):
            terraform[command] = terraform.get(command, 0.0) + float(seconds)
            if t["task_id"] in chain:
                terraform_crit += float(seconds)
        m = PACKER_LINE.findall(log)
        packer += sum(float(x) for x in m)
        starts += log.count("Rescheduling task") + log.count("AirflowRescheduleException")
    import boto3

    asg = boto3.client(
        "autoscaling",
        region_name="us-east-1",
        endpoint_url=rt.aws.endpoint_url,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    ref = asg.describe_instance_refreshes(AutoScalingGroupName="demo-web-asg")["InstanceRefreshes"][0]
    refresh = (ref["EndTime"] - ref["StartTime"]).total_seconds() if ref.get("EndTime") else 0.0
    wall = _ts(run["end_date"]) - _ts(run["start_date"])
    # Where the critical path's seconds go: per task, the gap since the task before it on the path
    # ended (or the run started) -> scheduling, queueing, worker start-up before the task's start
    # date; and start -> end (for a deferred task that includes its time in the triggerer).
    steps, prev_end = [], _ts(run["start_date"])
    for c in chain:
        s, e = spans[c]
        steps.append({"task": c, "gap": round(s - prev_end, 1), "run": round(e - s, 1)})
        prev_end = e
    # after the path's last task: the teardowns that end the run (next_stage, roll_forward), each
    # with its start after record's end and its run time; and record's end -> the run's end
    rec_end = prev_end  # the end of the path's last task, record (the run's start if it never ran)
    after_record = [
        {"task": t, "gap": round(s - rec_end, 1), "run": round(e - s, 1)}
        for t, (s, e) in sorted(spans.items(), key=lambda kv: kv[1][0])
        if s >= rec_end - 0.05 and t not in chain
    ]
    run_end_after_record = round(_ts(run["end_date"]) - rec_end, 1)
    refresh_end_to_wait_end = None
    if ref.get("EndTime") and "wait_for_refresh" in spans:
        refresh_end_to_wait_end = round(spans["wait_for_refresh"][1] - ref["EndTime"].timestamp(), 1)
    return {
        "dag": dag_id,
        "state": run["state"],
        "wall": wall,
        "critical_path": " > ".join(chain),
        "critical_task_s": sum(spans[c][1] - spans[c][0] for c in chain),
        "slot": busy,
        "packer": packer,
        "terraform": sum(terraform.values()),
        "terraform_by_command": {k: round(v, 1) for k, v in terraform.items()},
        "terraform_critical": terraform_crit,
        "refresh": refresh,
        "task_instances": len([t for t in tis if t["state"] not in ("skipped", "removed")]),
        "task_instances_all": len(tis),
        "task_starts": starts,
        "overhead": wall - (packer + terraform_crit + refresh),
        # the same with Packer subtracted only when the bake is on the critical path (since the
        # check runs beside the bake, it usually is not: then Packer's time is not the wall's)
        "overhead_cp": wall - ((packer if "bake" in chain else 0.0) + terraform_crit + refresh),
        "critical_steps": steps,
        "refresh_end_to_wait_end": refresh_end_to_wait_end,
        "after_record": after_record,
        "run_end_after_record": run_end_after_record,
    }


def child(tree: Path, batch_seconds: float, port: int) -> dict:
    sys.path[:0] = [str(tree), str(tree / "plugins")]
    from sandbox.demo import sandbox_with_airflow  # the tree's own

    overrides = {"AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True", "AIRFLOW__AMI_RELEASE__REFRESH_POLL_SECONDS": "10"}
    out: dict = {"tree": str(tree)}
    with sandbox_with_airflow(port, batch_seconds, env_overrides=overrides, quiet=True) as (rt, af):
        for dag_id in ("ami_release", "ami_rollback"):
            af.wait_for_dag(dag_id)
            af.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        first = _measure(af, rt, "ami_release", {"app": "demo-web", "version": "1.0.0"})
        if first["state"] != "success":
            return {**out, "error": "the first release failed"}
        out["release"] = _measure(af, rt, "ami_release", {"app": "demo-web", "version": "1.1.0"})
        out["rollback"] = _measure(
            af, rt, "ami_rollback", {"app": "demo-web", "reason": "bench: roll back 1.1.0 to 1.0.0"}
        )
    return out


def parse_times(tree: Path, runs: int = 5) -> dict[str, float]:
    """ms to import each DAG file after Airflow (and the provider's base) is imported; min of runs."""
    code = (
        "import sys,time,importlib;"
        f"sys.path[:0]=[{str(tree / 'plugins')!r},{str(tree / 'dags')!r},{str(tree)!r}];"
        "import airflow.sdk, airflow.providers.amazon.aws.operators.base_aws;"
        "t=time.perf_counter();importlib.import_module(sys.argv[1]);print((time.perf_counter()-t)*1000)"
    )
    # What a DAG processor sees: the plugins' bytecode cached (a deployment's image has it; this
    # machine sets PYTHONDONTWRITEBYTECODE=1, under which every run would compile every module
    # from source, 10-15 ms for catalog.py alone, and measure the compiler, not the import).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "plugins", "dags"], cwd=tree, env=env, check=False)
    out = {}
    for dag in sorted(f.stem for f in (tree / "dags").glob("*.py") if not f.name.startswith("_")):
        samples = []
        for _ in range(runs):
            r = subprocess.run(
                [sys.executable, "-c", code, dag], capture_output=True, text=True, cwd=tree, check=False, timeout=300
            )
            if r.returncode == 0 and r.stdout.strip():
                samples.append(float(r.stdout.strip().splitlines()[-1]))
        out[dag] = min(samples) if samples else float("nan")
    return out


# -- the parent: alternate the trees, print the table ------------------------------------------------
ROW = (
    "wall",
    "critical_task_s",
    "slot",
    "packer",
    "terraform",
    "terraform_critical",
    "refresh",
    "overhead",
    "overhead_cp",
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--trees", default=".", help="comma-separated checkouts; the last is compared with the first")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--batch-seconds", type=float, default=20.0)
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--parse-only", action="store_true", help="only the DAG files' parse times (no Airflow run)")
    p.add_argument("--log-dir", help="write the critical path's task logs here (per DAG; the last run of each wins)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(Path(args.child).resolve(), args.batch_seconds, args.port)), flush=True)
        return 0
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        os.environ["CRITICAL_PATH_LOG_DIR"] = str(Path(args.log_dir).resolve())  # the children inherit it
    if args.parse_only:
        for tree in trees:
            ms = {k: round(v) for k, v in parse_times(tree).items()}
            print(f"parse ms beyond Airflow's import, {tree.name}: {json.dumps(ms)}")
        return 0
    results: dict[Path, list[dict]] = {t: [] for t in trees}
    for n in range(args.rounds):
        for tree in trees:
            print(f"== round {n + 1}: {tree}", flush=True)
            r = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "bench" / "critical_path.py"),
                    "--child",
                    str(tree),
                    "--batch-seconds",
                    str(args.batch_seconds),
                    "--port",
                    str(args.port),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(r.stdout[-2000:], r.stderr[-3000:])
                return 1
            res = json.loads(line[7:])
            results[tree].append(res)
            print(json.dumps(res, indent=1), flush=True)
    parse = {t: parse_times(t) for t in trees}

    def med(tree: Path, kind: str, key: str) -> float:
        vals = [r[kind][key] for r in results[tree] if kind in r and r[kind]["state"] == "success"]
        return statistics.median(vals) if vals else float("nan")

    print(f"\nmedian of {args.rounds} round(s), --batch-seconds {args.batch_seconds:g}")
    for kind in ("release", "rollback"):
        print(f"\n{kind}: " + "  ".join(f"{h:>12}" for h in ("tree", *ROW, "TIs", "starts")))
        for tree in trees:
            cells = [f"{med(tree, kind, k):12.1f}" for k in ROW]
            cells += [f"{med(tree, kind, 'task_instances'):12.0f}", f"{med(tree, kind, 'task_starts'):12.0f}"]
            print(f"{kind}: {tree.name[:12]:>12}  " + "  ".join(cells))
        if len(trees) > 1:
            old, new = trees[0], trees[-1]
            print(f"{kind}: wall new/old = {med(new, kind, 'wall') / med(old, kind, 'wall'):.2f}")
    for tree in trees:
        ms = {k: round(v) for k, v in parse[tree].items()}
        print(f"parse ms beyond Airflow's import, {tree.name}: {json.dumps(ms)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
