"""Sandbox scale check: describe_images(Owners=['self']) and paginated describe_instances with
10,000 own AMIs and 20,000 instances, with moto's response rendering ("before") and the
sandbox's compiled rendering (sandbox/aws/fast.py, "after").

    .venv/bin/python bench/sandbox_scale.py [--images 10000] [--instances 20000] [--skip-before] [--unpatched]

Each call is split into "server" (request sent -> response bytes received: moto + rendering)
and "parse" (botocore turning the XML into dicts, in this process).  The parse part is the
client's cost and the same either way.  --unpatched also times moto's original tag scan
(O(N^2): very slow at full size).  Takes a few minutes at full size (the "before" rows).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.config import Config

from sandbox.aws import AwsSandbox, fast, patches
from sandbox.aws.state import LOCK


def populate(sb: AwsSandbox, images: int, instances: int) -> None:
    from moto.ec2.models import ec2_backends

    t = time.perf_counter()
    for n in range(images):
        sb.create_image(f"scale-{n}", age_days=n % 200, tags={"App": "scale", "Version": str(n)})
    ec2 = ec2_backends[sb.account_id][sb.region]
    ami = sb.account["vendor_images"]["amazon-linux"]
    with LOCK:
        left = instances
        while left > 0:
            batch = min(1000, left)
            ec2.run_instances(
                ami,
                batch,
                None,
                [],
                instance_type="t3.micro",
                is_instance_type_default=False,
                tags={"instance": {"App": "scale"}},
                placement="us-east-1a",
            )
            left -= batch
    print(f"populate: {images} images + {instances} instances in {time.perf_counter() - t:.1f} s")


class _Clock:
    """Per call: send -> response received (server) and received -> parsed (client parse)."""

    def __init__(self, client) -> None:
        self.server = self.parse = 0.0
        self.calls = 0
        self._sent = self._received = 0.0
        client.meta.events.register("before-send.ec2.*", self._on_send)
        client.meta.events.register("before-parse.ec2.*", self._on_receive)
        client.meta.events.register("after-call.ec2.*", self._on_parsed)

    def reset(self) -> None:
        self.server = self.parse = 0.0
        self.calls = 0

    def _on_send(self, **_):
        self._sent = time.perf_counter()

    def _on_receive(self, **_):
        self._received = time.perf_counter()
        self.server += self._received - self._sent

    def _on_parsed(self, **_):
        self.parse += time.perf_counter() - self._received
        self.calls += 1


def timings(sb: AwsSandbox, label: str) -> list[tuple]:
    import boto3

    cfg = Config(read_timeout=3600, retries={"total_max_attempts": 1})
    ec2 = boto3.client(
        "ec2",
        endpoint_url=sb.endpoint_url,
        region_name=sb.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=cfg,
    )
    clock = _Clock(ec2)
    rows = []

    def run(name, fn):
        clock.reset()
        t = time.perf_counter()
        count = fn()
        total = time.perf_counter() - t
        rows.append((label, name, count, clock.calls, clock.server, clock.parse, total))
        print(
            f"  {label:7} {name:44} {count:6} items {clock.calls:3} calls  server {clock.server:7.2f} s"
            f"  parse {clock.parse:7.2f} s  total {total:7.2f} s",
            flush=True,
        )

    def images_one_call():
        return len(ec2.describe_images(Owners=["self"])["Images"])

    def images_paginated():
        return sum(
            len(p["Images"])
            for p in ec2.get_paginator("describe_images").paginate(Owners=["self"], PaginationConfig={"PageSize": 1000})
        )

    def images_by_tag():
        return len(
            ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:Version", "Values": ["7", "77"]}])["Images"]
        )

    def instances_paginated():
        return sum(
            len(r["Instances"])
            for p in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 1000})
            for r in p["Reservations"]
        )

    def instances_running_by_image():
        return sum(
            len(r["Instances"])
            for p in ec2.get_paginator("describe_instances").paginate(
                Filters=[
                    {"Name": "instance-state-name", "Values": ["running", "pending"]},
                    {"Name": "image-id", "Values": [sb.account["vendor_images"]["amazon-linux"]]},
                ],
                PaginationConfig={"PageSize": 1000},
            )
            for r in p["Reservations"]
        )

    run("describe_images(Owners=['self'])", images_one_call)
    run("describe_images paginated (PageSize 1000)", images_paginated)
    run("describe_images tag:Version filter", images_by_tag)
    run("describe_instances paginated (PageSize 1000)", instances_paginated)
    run("describe_instances state+image-id filters", instances_running_by_image)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--instances", type=int, default=20_000)
    ap.add_argument("--skip-before", action="store_true", help="only time the fast path")
    ap.add_argument("--unpatched", action="store_true", help="also time moto's tag scan (O(N^2))")
    args = ap.parse_args()
    t = time.perf_counter()
    sb = AwsSandbox().start()
    print(f"sandbox start: {time.perf_counter() - t:.2f} s")
    rows: list[tuple] = []
    try:
        populate(sb, args.images, args.instances)
        fast.set_enabled(True)
        rows += timings(sb, "after")
        if not args.skip_before:
            fast.set_enabled(False)
            try:
                rows += timings(sb, "before")
            finally:
                fast.set_enabled(True)
        if args.unpatched:
            patches.uninstall_fast_tags()
            fast.set_enabled(False)
            try:
                rows += timings(sb, "no-index")
            finally:
                patches.install_fast_tags()
                fast.set_enabled(True)
    finally:
        sb.stop()
    print()
    print("| call | mode | items | calls | server s | botocore parse s | total s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, name, count, calls, server, parse, total in sorted(rows, key=lambda r: (r[1], r[0] != "before")):
        print(f"| {name} | {label} | {count} | {calls} | {server:.2f} | {parse:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
