"""Sandbox scale check: describe_images(Owners=['self']) and paginated describe_instances
with 10,000 own AMIs and 20,000 instances, with and without the sandbox's tag index.

    .venv/bin/python bench/sandbox_scale.py [--images 10000] [--instances 20000] [--unpatched]

--unpatched also times moto's original tag scan (O(N^2): slow at full size).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.config import Config  # noqa: E402

from sandbox.aws import AwsSandbox, patches  # noqa: E402
from sandbox.aws.state import LOCK  # noqa: E402


def populate(sb: AwsSandbox, images: int, instances: int) -> None:
    from moto.ec2.models import ec2_backends

    t = time.perf_counter()
    for n in range(images):
        sb.create_image(f"scale-{n}", age_days=n % 200, tags={"App": "scale", "Version": str(n)})
    ec2 = ec2_backends[sb.account_id][sb.region]
    subnet = sb.account["subnet_ids"][0]
    ami = sb.account["vendor_images"]["amazon-linux"]
    with LOCK:
        left = instances
        while left > 0:
            batch = min(1000, left)
            ec2.run_instances(ami, batch, None, [], instance_type="t3.micro", is_instance_type_default=False,
                              tags={"instance": {"App": "scale"}}, placement="us-east-1a")
            left -= batch
    print(f"populate: {images} images + {instances} instances in {time.perf_counter() - t:.1f} s")


def timings(sb: AwsSandbox, label: str) -> None:
    cfg = Config(read_timeout=3600, retries={"total_max_attempts": 1})
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=sb.endpoint_url, region_name=sb.region,
                       aws_access_key_id="testing", aws_secret_access_key="testing", config=cfg)
    t = time.perf_counter()
    n_images = len(ec2.describe_images(Owners=["self"])["Images"])
    t_images = time.perf_counter() - t
    t = time.perf_counter()
    n_instances = 0
    pages = 0
    for page in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 1000}):
        pages += 1
        n_instances += sum(len(r["Instances"]) for r in page["Reservations"])
    t_instances = time.perf_counter() - t
    print(f"{label}: describe_images(Owners=['self']) -> {n_images} images in {t_images:.2f} s; "
          f"describe_instances paginated -> {n_instances} instances / {pages} pages in {t_instances:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--instances", type=int, default=20_000)
    ap.add_argument("--unpatched", action="store_true")
    args = ap.parse_args()
    t = time.perf_counter()
    sb = AwsSandbox().start()
    print(f"sandbox start: {time.perf_counter() - t:.2f} s")
    try:
        populate(sb, args.images, args.instances)
        timings(sb, "with tag index")
        if args.unpatched:
            patches.uninstall_fast_tags()
            try:
                timings(sb, "moto's tag scan")
            finally:
                patches.install_fast_tags()
    finally:
        sb.stop()


if __name__ == "__main__":
    main()
