"""Wall time of one ``ami_retention`` run across an Organization: N accounts x regions.

    .venv/bin/python bench/org_retention.py [--accounts 10] [--regions us-east-1,us-west-2]
                                            [--amis-per-account 200] [--parallel 4] [--shape celery]

What it does, all real parts: the in-process sandbox (moto server) holds N member accounts
(separate moto account ids, each with the retention role the workers' connection assumes);
each account gets ``--amis-per-account`` own AMIs spread over the regions (a quarter young, the
rest older than 60 days; one in ten already marked and due; one a group's launch template uses).
The policy names the N accounts; one ``ami_retention`` run is ``dag.test()`` of the real DAG
file (the mapped task per account x region, the summary task). The clock covers ``dag.test()``
only (the DAG is parsed and the DB migrated before).

Printed: the run's wall time, the sum and the spread of the retention tasks' own durations,
the AssumeRole count, and the counts of the reports written per account. No assertion on time.

``--shape dagtest`` (default): ``dag.test()`` runs task instances one after another in this
process, so the wall time is that of a single worker slot.

``--shape celery``: the production shape (sandbox/cluster.py, as ``make cluster`` and the
cluster test start it: docker-compose.yaml's Airflow roles as processes, CeleryExecutor with
Redis, PostgreSQL, OpenBao over TLS, the sandbox AWS server in its own process). The accounts and
images are seeded over the sandbox's HTTP control surface (``/_sandbox/accounts``,
``/_sandbox/images``), the policy is handed to every role as
``AIRFLOW__AMI_RELEASE__RETENTION_POLICY``, and the admin triggers ``ami_retention_manual``
(mode apply: the scheduled DAG takes no manual runs; both run the same tasks) through the REST
API. The default workers (compose: concurrency 4) run up to ``--parallel`` retention tasks at
once (``retention_max_parallel``). The clock covers trigger -> the run's end as the API reports
it; the tasks' own durations come from the API too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / ".airflow-bench-org"
BUCKET = "ami-release-ledger-123456789012"


def _environment(parallel: int) -> None:
    HOME.mkdir(exist_ok=True)
    os.environ.update(
        AIRFLOW_HOME=str(HOME),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{HOME / 'airflow.db'}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:8080/execution/",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",  # the per-image tables would swamp the output
        AIRFLOW__AMI_RELEASE__LEDGER_BUCKET=BUCKET,
        AIRFLOW__AMI_RELEASE__RETENTION_MAX_PARALLEL=str(parallel),
    )
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(var, None)
    sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
    if not (HOME / ".migrated").exists():
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL, timeout=600)
        (HOME / ".migrated").touch()


class HttpSandbox:
    """What ``_seed`` needs of a sandbox that runs in another process (the Celery shape's): its
    HTTP control surface and clients of any of its accounts (moto's ``x-moto-account-id``)."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        self.endpoint_url, self.region = endpoint_url, region

    def _post(self, path: str, body: dict[str, object]) -> dict[str, str]:
        import urllib.request

        req = urllib.request.Request(
            f"{self.endpoint_url}/_sandbox/{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return dict(json.loads(resp.read()))

    def add_member_account(self, account_id: str) -> str:
        return self._post("accounts", {"account_id": account_id})["role_arn"]

    def create_image(self, name: str, *, age_days: float, region: str, account_id: str, tags: dict[str, str]) -> str:
        body = {"name": name, "age_days": age_days, "region": region, "account_id": account_id, "tags": tags}
        return self._post("images", body)["image_id"]

    def client(self, service: str, region: str, internal: bool, account_id: str) -> object:
        from sandbox.aws.sandbox import sandbox_client

        return sandbox_client(self.endpoint_url, service, region, internal=internal, account_id=account_id)


def _seed(sb, account_id: str, regions: list[str], amis: int, rng: random.Random) -> None:
    per_region = max(1, amis // len(regions))
    due = f"Resource does not meet policy: deregister@{datetime.now(UTC) - timedelta(days=1):%Y/%m/%d}"
    for region in regions:
        used = None
        for i in range(per_region):
            young = i % 4 == 0
            tags = {"maid_status": due} if (not young and i % 10 == 1) else {}
            image = sb.create_image(
                f"app-{i}",
                age_days=rng.uniform(1, 59) if young else rng.uniform(61, 400),
                region=region,
                account_id=account_id,
                tags=tags,
            )
            if used is None and not young and not tags:
                used = image
        ec2 = sb.client("ec2", region=region, internal=True, account_id=account_id)
        asg = sb.client("autoscaling", region=region, internal=True, account_id=account_id)
        lt = ec2.create_launch_template(
            LaunchTemplateName="web", LaunchTemplateData={"ImageId": used, "InstanceType": "t3.micro"}
        )["LaunchTemplate"]
        asg.create_auto_scaling_group(
            AutoScalingGroupName="web",
            MinSize=0,
            MaxSize=1,
            DesiredCapacity=0,
            LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]},
            AvailabilityZones=[f"{region}a"],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--regions", default="us-east-1,us-west-2")
    parser.add_argument("--amis-per-account", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--shape", choices=("dagtest", "celery"), default="dagtest")
    args = parser.parse_args()
    regions = args.regions.split(",")
    if args.shape == "celery":
        sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
        celery(args, regions)
        return
    _environment(args.parallel)

    import runpy

    import yaml

    from amirelease.retention.policy import DEFAULT_POLICY_PATH
    from sandbox.aws import AwsSandbox

    sb = AwsSandbox(builders=False).start()
    try:
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=sb.region,
            AWS_ENDPOINT_URL=sb.endpoint_url,
            AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"region_name": sb.region, "endpoint_url": sb.endpoint_url},
                }
            ),
        )
        rng = random.Random(7)
        accounts = _accounts(args.accounts)
        t0 = time.perf_counter()
        entries = []
        for name, account_id in accounts.items():
            entries.append({"name": name, "role_arn": sb.add_member_account(account_id)})
            _seed(sb, account_id, regions, args.amis_per_account, rng)
        seeded = time.perf_counter() - t0

        policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
        policy.update(regions=regions, accounts=entries, recycle_bin=False)
        path = HOME / "org-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        os.environ["AIRFLOW__AMI_RELEASE__RETENTION_POLICY"] = str(path)

        dag = runpy.run_path(str(REPO / "dags" / "ami_retention.py"))["dag"]
        sb.reset_request_counts()
        t0 = time.perf_counter()
        dr = dag.test()
        wall = time.perf_counter() - t0
        counts = sb.request_counts()

        tis = [ti for ti in dr.get_task_instances() if ti.task_id == "retention"]
        durations = sorted((ti.end_date - ti.start_date).total_seconds() for ti in tis if ti.start_date and ti.end_date)
        reports, totals, _ = _count_reports(sb.client("s3", internal=True), accounts, regions)
        n_tasks = len(accounts) * len(regions)
        print(f"accounts x regions: {len(accounts)} x {len(regions)} = {n_tasks} retention tasks")
        print(f"AMIs: {args.amis_per_account} per account, {args.amis_per_account * len(accounts)} in all")
        print(f"seeding: {seeded:.1f} s (not timed below)")
        print(f"run state: {dr.state}; task states: {sorted({str(ti.state) for ti in tis})}")
        print(f"wall time of one ami_retention run (dag.test): {wall:.1f} s")
        if durations:
            print(
                f"retention tasks: sum {sum(durations):.1f} s, min {durations[0]:.2f} s, "
                f"median {durations[len(durations) // 2]:.2f} s, max {durations[-1]:.2f} s"
            )
        print(f"reports written: {reports} of {n_tasks}; decisions in them: {totals}")
        print(f"AWS requests: {sum(counts.values())} (sts:AssumeRole {counts.get('sts:AssumeRole', 0)})")
        print(
            "dag.test() runs the tasks one after another; a deployment runs up to "
            f"max_active_tis_per_dagrun={args.parallel} of them at once on its Celery workers (not measured here)"
        )
    finally:
        sb.stop()


def _accounts(n: int) -> dict[str, str]:
    return {f"member-{k:02d}": f"{100000000000 + k:012d}" for k in range(1, n + 1)}


def _count_reports(s3, accounts: dict[str, str], regions: list[str]) -> tuple[int, dict[str, int], list[str]]:
    """(reports found, the decisions in them summed, the account/regions without a report)."""
    from amirelease.retention.report import latest_report

    totals: dict[str, int] = {}
    reports, missing = 0, []
    for name in accounts:
        for region in regions:
            report = latest_report(s3, BUCKET, region, account=name)
            if report is None:
                missing.append(f"{name}/{region}")
                continue
            reports += 1
            for k, v in (report.get("counts") or {}).items():
                totals[k] = totals.get(k, 0) + int(v)
    return reports, dict(sorted(totals.items())), missing


def celery(args: argparse.Namespace, regions: list[str]) -> None:
    """One ami_retention_manual run (apply) across the accounts, on the Celery shape."""
    import shutil
    import tempfile

    import boto3
    import yaml

    from amirelease.retention.policy import DEFAULT_POLICY_PATH
    from sandbox.cluster import Cluster

    root = Path(tempfile.mkdtemp(prefix="org-retention-celery-"))
    accounts = _accounts(args.accounts)
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    policy.update(
        regions=regions,
        accounts=[{"name": n, "role_arn": f"arn:aws:iam::{a}:role/ami-retention"} for n, a in accounts.items()],
        recycle_bin=False,
    )
    path = root / "org-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    cl = Cluster(
        root=root,
        say=lambda *a: print(*a, flush=True),
        extra_env={
            "AIRFLOW__AMI_RELEASE__RETENTION_POLICY": str(path),
            "AIRFLOW__AMI_RELEASE__RETENTION_MAX_PARALLEL": str(args.parallel),
        },
    )
    try:
        cl.start()
        endpoint = cl.sandbox_env["AWS_ENDPOINT_URL"]
        sb = HttpSandbox(endpoint, cl.sandbox_env["AWS_DEFAULT_REGION"])
        rng = random.Random(7)
        t0 = time.perf_counter()
        for name, account_id in accounts.items():
            assert sb.add_member_account(account_id).endswith(f"{account_id}:role/ami-retention"), name
            _seed(sb, account_id, regions, args.amis_per_account, rng)
        seeded = time.perf_counter() - t0
        admin = cl.api("admin")
        dag_id = "ami_retention_manual"
        status, body = admin.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        assert status == 200, (status, body)
        t0 = time.perf_counter()
        status, body = admin.call(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {"mode": "apply"}}
        )
        assert status == 200, (status, body)
        run_id = body["dag_run_id"]
        while True:
            run = admin.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                break
            if time.perf_counter() - t0 > 1800:
                raise RuntimeError(f"{dag_id} run {run_id} still {run['state']} after 30 minutes")
            time.sleep(0.5)
        waited = time.perf_counter() - t0
        tis = admin.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]
        mapped = [ti for ti in tis if ti["task_id"] == "retention"]
        durations = sorted(float(ti["duration"] or 0) for ti in mapped)
        hosts = sorted({str(ti.get("hostname")) for ti in mapped})
        started = min(_when(ti["start_date"]) for ti in mapped if ti["start_date"])
        ended = max(_when(ti["end_date"]) for ti in mapped if ti["end_date"])
        overlap = _max_overlap(mapped)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=sb.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        reports, totals, missing = _count_reports(s3, accounts, regions)
        n_tasks = len(accounts) * len(regions)
        run_wall = (_when(run["end_date"]) - _when(run["start_date"])).total_seconds()
        print(f"shape: Celery (CeleryExecutor, Redis, PostgreSQL; {', '.join(cl.services)})")
        print(f"accounts x regions: {len(accounts)} x {len(regions)} = {n_tasks} retention tasks")
        print(f"AMIs: {args.amis_per_account} per account, {args.amis_per_account * len(accounts)} in all")
        print(f"seeding over HTTP: {seeded:.1f} s (not timed below); load {os.getloadavg()}")
        print(f"run state: {run['state']}; retention task states: {sorted({str(ti['state']) for ti in mapped})}")
        print(f"wall time, trigger -> the API reports the run ended: {waited:.1f} s")
        print(f"the run's own start -> end (API): {run_wall:.1f} s")
        print(
            f"retention tasks: first start -> last end {(ended - started).total_seconds():.1f} s; sum "
            f"{sum(durations):.1f} s, min {durations[0]:.2f} s, median {durations[len(durations) // 2]:.2f} s, "
            f"max {durations[-1]:.2f} s; at most {overlap} at once (retention_max_parallel {args.parallel}); "
            f"ran on {', '.join(hosts)}"
        )
        print(f"reports written: {reports} of {n_tasks}; decisions in them: {totals}")
        if missing:
            print(f"NO REPORT for: {', '.join(missing)}")
    finally:
        cl.stop()
        left = cl.listening()
        print("cluster stopped" + (f"; STILL LISTENING: {left}" if left else "; no port left open"))
        shutil.rmtree(root, ignore_errors=True)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _max_overlap(tis: list[dict[str, object]]) -> int:
    """The most task instances running at the same moment (from their start and end dates)."""
    events = []
    for ti in tis:
        if ti["start_date"] and ti["end_date"]:
            events += [(_when(str(ti["start_date"])), 1), (_when(str(ti["end_date"])), -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak


if __name__ == "__main__":
    main()
