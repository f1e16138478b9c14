"""Wall time of one ``ami_retention`` run across an Organization: N accounts x regions.

    .venv/bin/python bench/org_retention.py [--accounts 10] [--regions us-east-1,us-west-2]
                                            [--amis-per-account 200] [--parallel 4]

What it does, all real parts: the in-process sandbox (moto server) holds N member accounts
(separate moto account ids, each with the retention role the workers' connection assumes);
each account gets ``--amis-per-account`` own AMIs spread over the regions (a quarter young, the
rest older than 60 days; one in ten already marked and due; one a group's launch template uses).
The policy names the N accounts; one ``ami_retention`` run is ``dag.test()`` of the real DAG
file (the mapped task per account x region, the summary task). The clock covers ``dag.test()``
only (the DAG is parsed and the DB migrated before).

Printed: the run's wall time, the sum and the spread of the retention tasks' own durations,
the AssumeRole count, and the counts of the reports written per account. No assertion on time.

Note: ``dag.test()`` runs task instances one after another in this process, so the wall time is
that of a single worker slot; the DAG's ``max_active_tis_per_dagrun`` (``--parallel``) only
bounds a real deployment (Celery workers), which this script does not start.
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
    args = parser.parse_args()
    regions = args.regions.split(",")
    _environment(args.parallel)

    import runpy

    import yaml

    from amirelease.retention.policy import DEFAULT_POLICY_PATH
    from amirelease.retention.report import latest_report
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
        accounts = {f"member-{n:02d}": f"{100000000000 + n:012d}" for n in range(1, args.accounts + 1)}
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
        s3 = sb.client("s3", internal=True)
        totals: dict[str, int] = {}
        reports = 0
        for name in accounts:
            for region in regions:
                report = latest_report(s3, BUCKET, region, account=name)
                if report is not None:
                    reports += 1
                    for k, v in (report.get("counts") or {}).items():
                        totals[k] = totals.get(k, 0) + int(v)
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
        print(f"reports written: {reports} of {n_tasks}; decisions in them: {dict(sorted(totals.items()))}")
        print(f"AWS requests: {sum(counts.values())} (sts:AssumeRole {counts.get('sts:AssumeRole', 0)})")
        print(
            "dag.test() runs the tasks one after another; a deployment runs up to "
            f"max_active_tis_per_dagrun={args.parallel} of them at once on its Celery workers (not measured here)"
        )
    finally:
        sb.stop()


if __name__ == "__main__":
    main()
