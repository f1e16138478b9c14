"""Benchmark: what a burst of throttling costs one AWS call, with botocore's default retries
(legacy mode, 5 attempts) and with the deployment's policy (retry.py: standard mode, 10
attempts by default), against the sandbox's fault surface (ec2:DescribeVpcs answers
RequestLimitExceeded/503 the first k times).

For k = 0 .. attempts, prints per retry config: whether the call got through, and the seconds
it took (median and max over --runs runs; the backoff is jittered).

    .venv/bin/python bench/aws_retry_policy.py [--runs 5] [--attempts 10]
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from amirelease.retry import AwsRetryPolicy  # noqa: E402
from sandbox.aws import AwsSandbox  # noqa: E402


def one_call(sb: AwsSandbox, config: Config | None, throttles: int) -> tuple[bool, float]:
    sb.faults.clear()
    if throttles:
        sb.faults.throttle("ec2:DescribeVpcs", times=throttles)
    ec2 = boto3.client(
        "ec2",
        region_name=sb.region,
        endpoint_url=sb.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )
    start = time.perf_counter()
    try:
        ec2.describe_vpcs()
        ok = True
    except ClientError:
        ok = False
    return ok, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--attempts", type=int, default=10)
    args = ap.parse_args()
    policy = AwsRetryPolicy(max_attempts=args.attempts)
    configs = {
        "botocore default (legacy, 5 attempts)": None,
        f"policy ({policy.mode}, {policy.max_attempts} attempts)": Config(retries=policy.botocore_retries()),
    }
    sb = AwsSandbox().start()
    try:
        print(f"{'throttles':>9}  " + "  ".join(f"{name:>44}" for name in configs))
        for k in range(args.attempts + 1):
            cells = []
            for config in configs.values():
                runs = [one_call(sb, config, k) for _ in range(args.runs)]
                ok = sum(1 for r in runs if r[0])
                secs = [r[1] for r in runs]
                cells.append(
                    f"{ok}/{args.runs} ok, median {statistics.median(secs):5.1f} s, max {max(secs):5.1f} s".rjust(44)
                )
            print(f"{k:>9}  " + "  ".join(cells), flush=True)
    finally:
        sb.stop()


if __name__ == "__main__":
    main()
