"""Benchmark one AMI retention run against the sandbox at 1,000 / 5,000 / 10,000 own AMIs.

    .venv/bin/python bench/retention_bench.py [--sizes 1000,5000,10000]

For each size: reset the sandbox, register N own AMIs (mixed ages; some protected,
some carrying a due Custodian mark) and 2N instances spread over a fifth of them,
then time two runs of the real operator through the Airflow AWS connection:
"first" (marks ~40% of the account) and "steady" (the next 5-minute run, nothing new).
AWS requests are counted by action at the sandbox.

Honesty note: plain moto 5.2.5 ignores MaxResults on DescribeImages and would answer
in one page whatever the size; the column "DescribeImages on AWS" gives what real EC2
needs: ceil(N/1000) pages for the listing (+1 recheck call when something is due).
When the sandbox pages DescribeImages itself (sandbox/aws/fast.py does), the measured
ec2:DescribeImages column matches it. DeregisterImage/DeleteSnapshot are one call per
image/snapshot (no batch API exists) and bounded by the policy's cap.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="retention-bench-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the per-image report would swamp the table


def populate(sb, n: int) -> None:
    """N own AMIs and 2N instances, written straight into the sandbox backend (fast)."""
    from moto.ec2.models import ec2_backends

    now = datetime.now(UTC)
    due = f"Resource does not meet policy: deregister@{now - timedelta(days=1):%Y/%m/%d}"
    in_use = []
    for i in range(n):
        bucket = i % 200
        tags = {"App": "bench", "Version": f"1.{i}"}
        if bucket < 80:  # 40 %: old, unused -> marked on the first run
            age = 61 + i % 300
        elif bucket < 81:  # 0.5 %: old, carrying a due Custodian mark -> deregistered
            age, tags = 200, {**tags, "maid_status": due}
        elif bucket < 100:  # ~10 %: old but RetainIndefinitely=true
            age, tags = 400, {**tags, "RetainIndefinitely": "true"}
        elif bucket < 160:  # 30 %: young
            age = i % 60
        else:  # 20 %: old and in use
            age = 90
        image_id = sb.create_image(f"bench-{i:05d}", age_days=age, tags=tags)
        if bucket >= 160:
            in_use.append(image_id)
    # 2N instances over the in-use images, 10 per image, one reservation per image.
    backend = ec2_backends[sb.account_id][sb.region]
    per_image = max(1, (2 * n) // max(1, len(in_use)))
    ec2 = sb.client("ec2", internal=True)  # internal: not counted
    vpc = ec2.create_vpc(CidrBlock="10.128.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.128.0.0/16", AvailabilityZone=f"{sb.region}a")["Subnet"][
        "SubnetId"
    ]
    for image_id in in_use:
        backend.run_instances(
            image_id,
            per_image,
            None,
            [],
            instance_type="t3.micro",
            is_instance_type_default=False,
            subnet_id=subnet,
            placement=None,
            tags={},
        )


def bench_policy() -> str:
    """The shipped policy with the safety cap raised: 0.5 % of 10,000 is over the default 50."""
    import yaml

    from amirelease.retention.policy import DEFAULT_POLICY_PATH

    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["max_deregistrations_per_run"] = 1000
    path = Path(tempfile.mkdtemp(prefix="retention-bench-")) / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_once(sb, now: datetime, policy_path: str) -> tuple[float, dict[str, int], dict]:
    from amirelease.operators.retention import AmiRetentionOperator

    sb.reset_request_counts()
    op = AmiRetentionOperator(task_id="retention", region_name=sb.region, policy_path=policy_path)
    start = time.perf_counter()
    summary = op.execute({"data_interval_end": now, "logical_date": now})
    return time.perf_counter() - start, sb.request_counts(), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from sandbox.aws import AwsSandbox

    sb = AwsSandbox().start()
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": sb.region,
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"region_name": sb.region, "endpoint_url": sb.endpoint_url},
                }
            ),
        }
    )
    rows = []
    policy_path = bench_policy()
    try:
        for n in sizes:
            sb.reset()
            t0 = time.perf_counter()
            populate(sb, n)
            setup = time.perf_counter() - t0
            now = datetime.now(UTC)
            for label, when in (("first", now), ("steady", now + timedelta(minutes=5))):
                seconds, counts, summary = run_once(sb, when, policy_path)
                rows.append((n, label, seconds, counts, summary["counts"], setup))
    finally:
        sb.stop()

    actions = sorted({a for r in rows for a in r[3]})
    header = ["AMIs", "instances", "run", "seconds", "requests", "DescribeImages on AWS"] + actions
    table = [header]
    for n, label, seconds, counts, decided, _ in rows:
        recheck = 1 if decided.get("deregister") else 0
        table.append(
            [str(n), str(2 * n), label, f"{seconds:.2f}", str(sum(counts.values())), str(math.ceil(n / 1000) + recheck)]
            + [str(counts.get(a, 0)) for a in actions]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for i, r in enumerate(table):
        print("  ".join(c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for n, label, seconds, _, decided, setup in rows:
        print(f"{n:>6} {label:<6} decisions: {decided}   (populate {setup:.1f}s)")


if __name__ == "__main__":
    main()
