"""Retention at account scale: ami_retention vs real Cloud Custodian on the same sandbox account.

    nice -n 10 .venv/bin/python bench/retention_bench.py [--sizes 1000,5000,10000] [--groups 300]
        [--latency-ms 0,50,50-150] [--runs first,steady,later] [--pacing shipped|off]
        [--token-buckets] [--release-probe 2] [--listing paged|stock|truncated]

Latency (``--latency-ms``): each request to the sandbox is answered that many milliseconds late (a
number, or ``low-high`` drawn per request), slept outside moto's lock (sandbox/aws/latency.py), so
concurrent requests are served side by side as AWS serves them; every size is run at every
latency. ``--token-buckets``: the sandbox throttles EC2 as AWS does, with AWS's bucket sizes
(sandbox/aws/token_bucket.py), and the bench counts who was throttled. ``--pacing``: ours as
shipped (``[ami_release] retention_api_share`` 0.5, retention/pacing.py) or ``off``.
``--release-probe R``: while each run goes, a release's read calls (``DescribeImages``,
``DescribeInstances``, ``DescribeLaunchTemplateVersions`` of one app, no retries, its own access
key) are made R times a second beside it, to see whether the run leaves the release its budget
(a probe of the calls, not a release).

For each size N, one account (own AMIs, 2N instances, a few hundred Auto Scaling groups
each on its own launch template, some pinning a version, some on $Latest or $Default, a
backlog of due Cloud Custodian marks) is populated afresh - with the same random seed, so
the same account - for each contender, and each contender is timed on its own copy:

* custodian: real Cloud Custodian (``c7n`` from PyPI, installed by this script into its own
  virtualenv under ~/.cache/amirelease-bench, not into the project's lock), running the
  equivalent ``mark-for-op`` policy twice (first, then steady), then, 8 days later, the
  equivalent deregister policy;
* ours: one ``ami_retention`` run as shipped (first, then steady 5 minutes later), then, 8
  days later, the deregistration pass (at most 50 per run as shipped: the rest is deferred);
* ours-uncapped: the same with the cap lifted, so that its deregistration pass does as much
  as Custodian's;
* ours-nochecks, ours-uncapped-nochecks: the same two without AWS's own checks (issue 24: the
  Recycle Bin window, marks as deprecations, DescribeImageReferences, lastLaunchedTime), to
  price them: ``--contenders ours,ours-nochecks --sizes 1000``.

``--listing``: how the sandbox answers the paged listings during the runs (issue 18 item 1):
``paged`` as AWS pages them; ``stock`` as stock moto 5.2.5 answers DescribeLaunchTemplateVersions
(cut at the page size, no NextToken); ``truncated``: the first answer of each listing a
retention run relies on (the templates' ``$Latest``/``$Default``, every live instance, every
group, every own image) comes back as a first page without its NextToken; ``cut-templates``,
``cut-instances``, ``cut-groups``, ``cut-images``: only that one (the first cut a run notices
stops it, which hides what it would have made of the others).
Whatever the mode, every run is judged against the account's truth read from the sandbox's own
state, not through the API: "unsafe" counts the marks a run wrote and the images it deregistered
that a group's launch template version or a live instance uses.

"8 days later" is the account aged by 8 days (sandbox/aws/ageing.py): Custodian and our
marks (due 7 days after marking; ours rounded up to midnight) are then due for both.
Every run is a process of its own (bench/retention_bench_run.py) against the sandbox server
in this process; "run s" is the run alone (imports excluded), "process s" the whole
process. Requests are counted by action at the sandbox (S3 is not counted: ours writes
3 report objects per run). Custodian runs with ``--cache-period 0`` (it decides on fresh
listings, as ours does).

The account (per app = per group): its releases every 10-25 days back from a newest one
(1-25 days old for 90 % of the apps, 70-100 days for the rest); the template holds the
three newest releases; 40 % of the groups on $Latest, 40 % on $Default (half of those with
default = v2), 20 % pinning v2. 90 % of the 2N instances belong to the groups (on the
version they use); 10 % are stand-alone instances of earlier releases. Of the images older
than the template's: 10 % RetainIndefinitely=true, 2 % a near-miss tag, 1 % ForensicHold,
5 % a Custodian mark due 1-10 days ago.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "amirelease-bench"
C7N_VERSION = "0.9.53"
RUNNER = REPO / "bench" / "retention_bench_run.py"

CUSTODIAN_POLICY = """
policies:
  - name: ami-mark-unused
    resource: ami
    filters:
      - type: image-age
        days: 60
      - type: unused
        value: true
      - not:
          - "tag:RetainIndefinitely": "true"
      - "tag:ForensicHold": absent
      - "tag:maid_status": absent
    actions:
      - type: mark-for-op
        tag: maid_status
        op: deregister
        days: 7
"""
CUSTODIAN_DEREGISTER = """
policies:
  - name: ami-deregister-marked
    resource: ami
    filters:
      - type: marked-for-op
        tag: maid_status
        op: deregister
      - type: unused
        value: true
      - not:
          - "tag:RetainIndefinitely": "true"
      - "tag:ForensicHold": absent
    actions:
      - type: deregister
        delete-snapshots: true
"""


def c7n_python() -> Path:
    """Cloud Custodian in a virtualenv of its own under the cache dir (installed once)."""
    venv = CACHE / f"c7n-{C7N_VERSION}"
    python = venv / "bin" / "python"
    if not python.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"installing c7n=={C7N_VERSION} into {venv} (once)", flush=True)
        subprocess.run(["uv", "venv", "-q", "--python", "3.11", str(venv)], check=True)
        subprocess.run(["uv", "pip", "install", "-q", "--python", str(python), f"c7n=={C7N_VERSION}"], check=True)
    return python


# ------------------------------------------------------------------ the account


@dataclass
class Account:
    images: int = 0
    instances: int = 0
    groups: int = 0
    due_marks: int = 0
    seconds: float = 0.0
    spec: Counter[str] = field(default_factory=Counter)


def populate(sb: Any, n: int, groups: int, seed: int = 7) -> Account:
    from moto.ec2.models import ec2_backends
    from moto.moto_api._internal import mock_random

    from sandbox.aws.state import LOCK

    t0 = time.perf_counter()
    mock_random.seed(seed)
    rnd = random.Random(seed)
    acct = Account(groups=groups)
    ec2 = sb.client("ec2", internal=True)
    asg = sb.client("autoscaling", internal=True)
    backend = ec2_backends[sb.account_id][sb.region]
    # room for 2N instances (the seeded subnets are /24s)
    vpc = ec2.create_vpc(CidrBlock="10.128.0.0/16")["Vpc"]["VpcId"]
    big = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{sb.region}{az}")["Subnet"]["SubnetId"]
        for cidr, az in (("10.128.0.0/17", "a"), ("10.128.128.0/17", "b"))
    ]
    subnets, subnet = ",".join(big), big[0]
    now = time.time()
    group_instances = int(2 * n * 0.9) // groups
    history: list[list[str]] = []
    index = 0
    for app in range(groups):
        k = n // groups + (1 if app < n % groups else 0)
        stale = app % 10 == 0
        age = rnd.uniform(70, 100) if stale else rnd.uniform(1, 25)
        ids: list[str] = []
        for j in range(k):
            tags = {"App": f"app-{app:03d}", "Version": f"1.{k - j}.0", "ReleaseId": f"rel-{app:03d}-{k - j}"}
            if j >= 3 and age > 60:
                bucket = index % 100
                if bucket < 10:
                    tags["RetainIndefinitely"] = "true"
                elif bucket < 12:
                    tags["retainindefinitely"] = "true"
                elif bucket < 13:
                    tags.update(ForensicHold="rollback", ForensicHoldReason="INC-1 kept for forensics")
                elif bucket < 18:
                    due = time.gmtime(now - 86400 * rnd.randint(1, 10))
                    tags["maid_status"] = f"Resource does not meet policy: deregister@{time.strftime('%Y/%m/%d', due)}"
                    acct.due_marks += 1
            ids.append(sb.create_image(f"app-{app:03d}-{k - j}", age_days=age, tags=tags))
            index += 1
            age += rnd.uniform(10, 25)
        history.append(ids)
        acct.images += k
        # the template: the three newest releases, v3 = newest
        newest = list(reversed(ids[:3]))
        lt = ec2.create_launch_template(
            LaunchTemplateName=f"app-{app:03d}", LaunchTemplateData={"ImageId": newest[0], "InstanceType": "t3.micro"}
        )["LaunchTemplate"]["LaunchTemplateId"]
        for image in newest[1:]:
            ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"ImageId": image})
        kind = app % 5
        if kind in (0, 1):
            version = "$Latest"
        elif kind in (2, 3):
            version = "$Default"
            ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion=str(min(len(newest), 2 + app % 2)))
        else:
            version = str(min(len(newest), 2))
        acct.spec[version if version.startswith("$") else "pinned"] += 1
        asg.create_auto_scaling_group(
            AutoScalingGroupName=f"app-{app:03d}",
            MinSize=0,
            MaxSize=max(1, group_instances),
            DesiredCapacity=group_instances,
            LaunchTemplate={"LaunchTemplateId": lt, "Version": version},
            VPCZoneIdentifier=subnets,
        )
        acct.instances += group_instances
    # stand-alone instances of earlier releases
    loose = 2 * n - acct.instances
    with LOCK:
        while loose > 0:
            ids = history[rnd.randrange(groups)]
            image = ids[min(len(ids) - 1, rnd.choice([1, 1, 2, 3, 5, 8]))]
            count = min(loose, rnd.randint(1, 4))
            backend.run_instances(
                image,
                count,
                None,
                [],
                instance_type="t3.micro",
                is_instance_type_default=False,
                subnet_id=subnet,
                placement=None,
                tags={},
            )
            loose -= count
            acct.instances += count
    acct.seconds = time.perf_counter() - t0
    return acct


# the listings a run relies on, and what only that listing's request holds (the first answer of
# each is cut; a lookup by id, by number or by name is not a listing and is left whole)
LISTINGS = (
    ("ec2:DescribeLaunchTemplateVersions", "$Default"),  # $Latest/$Default of every template
    ("ec2:DescribeInstances", "instance-state-name"),  # every live instance
    ("autoscaling:DescribeAutoScalingGroups", None),  # every group
    ("ec2:DescribeImages", "Owner.1=self"),  # every own image
)


CUT_NAMES = {
    "ec2:DescribeLaunchTemplateVersions": "templates",
    "ec2:DescribeInstances": "instances",
    "autoscaling:DescribeAutoScalingGroups": "groups",
    "ec2:DescribeImages": "images",
}
LISTING_MODES = ("paged", "stock", "truncated", *(f"cut-{n}" for n in CUT_NAMES.values()))


@dataclass(frozen=True)
class Truth:
    """The account as it is, read from moto's own state (never through the API, whose listings
    a run may see cut): the images in use and each image's mark tag."""

    in_use: frozenset[str]
    marks: dict[str, str | None]

    @classmethod
    def read(cls, sb: Any) -> Truth:
        from moto.autoscaling.models import autoscaling_backends
        from moto.ec2.models import ec2_backends

        from sandbox.aws.state import LOCK

        with LOCK:
            ec2 = ec2_backends[sb.account_id][sb.region]
            groups = autoscaling_backends[sb.account_id][sb.region].autoscaling_groups.values()
            in_use = {g.image_id for g in groups}  # the version the group's template names, resolved
            in_use |= {i.image_id for i in ec2.all_instances() if i.state != "terminated"}
            marks = {image: ec2.tags.get(image, {}).get("maid_status") for image in ec2.amis}
        return cls(frozenset(in_use), marks)

    def unsafe(self, after: Truth) -> tuple[int, int]:
        """(marks written on images in use, images in use deregistered) between self and after."""
        marked = {i for i in self.in_use if after.marks.get(i) and after.marks[i] != self.marks.get(i)}
        gone = {i for i in self.in_use if i in self.marks and i not in after.marks}
        return len(marked), len(gone)


@contextmanager
def listing(sb: Any, mode: str) -> Iterator[None]:
    """The sandbox's paged listings as ``--listing`` asks, for one run."""
    from sandbox.aws.describe_limits import stock_template_listing

    if mode == "stock":
        with stock_template_listing():
            yield
        return
    cut = [(a, m) for a, m in LISTINGS if mode == "truncated" or mode == f"cut-{CUT_NAMES[a]}"]
    for action, match in cut:
        sb.faults.truncate(action, times=1, match=match)
    try:
        yield
    finally:
        if cut:
            sb.faults.clear()


# ------------------------------------------------------------------ contenders


@dataclass
class Result:
    size: int
    contender: str
    run: str
    seconds: float
    process: float
    requests: dict[str, int]
    outcome: str
    load: float = 0.0  # the machine's 1-minute load average when the run ended
    latency: str = "0"
    throttled: int = 0  # requests of the contender the sandbox's token buckets refused
    pacing: dict[str, Any] | None = None  # ours: the pacer's summary (calls, waited seconds)
    probe: dict[str, int] = field(default_factory=dict)  # the release probe's outcomes
    unsafe_marks: int = 0  # marks written on images a group or a live instance uses (Truth)
    unsafe_deregistrations: int = 0  # images in use that the run deregistered


class ReleaseProbe:
    """A release's read calls beside a run, ``rate`` a second, no retries, its own access key."""

    KEY = "release-probe"

    def __init__(self, sb: Any, rate: float) -> None:
        import threading

        import boto3
        from botocore.config import Config

        self.rate = rate
        self.ec2 = boto3.client(
            "ec2",
            endpoint_url=sb.endpoint_url,
            region_name=sb.region,
            aws_access_key_id=self.KEY,
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()  # by action, to take out of the contender's count
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ReleaseProbe:
        if self.rate > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _loop(self) -> None:
        from botocore.exceptions import ClientError

        names = ("ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeLaunchTemplateVersions")
        calls = (
            lambda: self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:App", "Values": ["app-001"]}]),
            lambda: self.ec2.describe_instances(
                Filters=[{"Name": "tag:aws:autoscaling:groupName", "Values": ["app-001"]}], MaxResults=100
            ),
            lambda: self.ec2.describe_launch_template_versions(LaunchTemplateName="app-001", Versions=["$Latest"]),
        )
        i = 0
        while not self.stop.wait(1.0 / self.rate):
            self.calls[names[i % len(names)]] += 1
            try:
                calls[i % len(calls)]()
                self.outcomes["ok"] += 1
            except ClientError as exc:
                self.outcomes[exc.response["Error"]["Code"]] += 1
            i += 1


def _policy(cap: int, checks: bool = True) -> str:
    """The shipped policy with this cap; ``checks=False``: without issue 24's AWS checks (no
    Recycle Bin window, no deprecations, no DescribeImageReferences, no lastLaunchedTime)."""
    import yaml

    from amirelease.retention.policy import DEFAULT_POLICY_PATH

    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["max_deregistrations_per_run"] = cap
    if not checks:
        data["recycle_bin"] = False
        data["mark_deprecates"] = False
        data["protections"]["recently_launched_days"] = 0
        data["protections"]["aws_references"] = {"enabled": False}
    path = Path(tempfile.mkdtemp(prefix="retention-bench-")) / f"policy-{cap}-{'checks' if checks else 'none'}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _run(sb: Any, argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, dict[str, int]]:
    sb.reset_request_counts()
    out = Path(tempfile.mkdtemp(prefix="retention-bench-run-")) / "out.json"
    start = time.perf_counter()
    proc = subprocess.run([*argv, str(out)], env=env, capture_output=True, text=True, timeout=1800)
    process = time.perf_counter() - start
    if not out.exists():
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text()), process, sb.request_counts()


def run_ours(sb: Any, env: dict[str, str], policy: str) -> tuple[dict[str, Any], float, dict[str, int]]:
    data, process, counts = _run(sb, [sys.executable, str(RUNNER), "ours", policy], env)
    s = data.get("summary") or {}
    c = s.get("counts", {})
    data["outcome"] = data.get("error") or (
        f"mark {c.get('mark', 0)}, unmark {c.get('unmark', 0)}, deregister {c.get('deregister', 0)}, "
        f"deferred {c.get('deferred', 0)}"
    )
    return data, process, counts


def run_custodian(sb: Any, env: dict[str, str], policy_text: str) -> tuple[dict[str, Any], float, dict[str, int]]:
    work = Path(tempfile.mkdtemp(prefix="retention-bench-c7n-"))
    policy = work / "policy.yml"
    policy.write_text(policy_text)
    data, process, counts = _run(sb, [str(c7n_python()), str(RUNNER), "custodian", str(policy), str(work / "out")], env)
    data["outcome"] = data.get("error") or ", ".join(f"{k}: {v}" for k, v in data.get("resources", {}).items())
    shutil.rmtree(work, ignore_errors=True)
    return data, process, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--contenders", default="custodian,ours,ours-uncapped")
    parser.add_argument("--latency-ms", default="0", help="per-request latencies, e.g. 0,50,50-150")
    parser.add_argument("--runs", default="first,steady,later", help="which runs: first, steady, later")
    parser.add_argument("--pacing", choices=("shipped", "off"), default="shipped")
    parser.add_argument("--token-buckets", action="store_true", help="the sandbox throttles EC2 as AWS does")
    parser.add_argument("--release-probe", type=float, default=0.0, help="a release's read calls per second")
    parser.add_argument(
        "--listing",
        choices=LISTING_MODES,
        default="paged",
        help="the listings as AWS pages them, as stock moto answers templates, each cut at its first page "
        "(truncated), or one of them (cut-templates, cut-instances, cut-groups, cut-images)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    contenders = args.contenders.split(",")
    latencies = [x.strip() for x in args.latency_ms.split(",") if x.strip()]
    labels = {"first": "first", "steady": "steady", "later": "8 days later", "8 days later": "8 days later"}
    runs = [labels[r.strip()] for r in args.runs.split(",")]
    from sandbox.aws.latency import parse_ms

    for latency in latencies:
        parse_ms(latency)  # a bad value fails here, before any account is made
    print(
        f"load {os.getloadavg()}, latencies {latencies} ms, runs {runs}, pacing {args.pacing}, "
        f"token buckets {'on' if args.token_buckets else 'off'}, release probe {args.release_probe}/s, "
        f"listing {args.listing}",
        flush=True,
    )
    if "custodian" in contenders:
        c7n_python()

    from sandbox.aws import AwsSandbox
    from sandbox.aws.ageing import age_account

    sb = AwsSandbox().start()
    home = tempfile.mkdtemp(prefix="retention-bench-airflow-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=sb.region,
        AWS_ENDPOINT_URL=sb.endpoint_url,
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",  # the per-image table would swamp the output
        AIRFLOW__AMI_RELEASE__LEDGER_BUCKET="ami-release-ledger-123456789012",
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": sb.region, "endpoint_url": sb.endpoint_url},
            }
        ),
    )
    if args.pacing == "off":
        env["AIRFLOW__AMI_RELEASE__RETENTION_API_SHARE"] = "off"
    shipped, uncapped = _policy(50), _policy(1_000_000)
    policies = {
        "ours": shipped,
        "ours-uncapped": uncapped,
        "ours-nochecks": _policy(50, checks=False),
        "ours-uncapped-nochecks": _policy(1_000_000, checks=False),
    }
    results: list[Result] = []
    accounts: dict[int, Account] = {}
    try:
        for n in sizes:
            for latency in latencies:
                for who in contenders:
                    sb.reset()  # latency and token buckets off while the account is made
                    acct = populate(sb, n, args.groups)
                    accounts[n] = acct
                    print(
                        f"{n:>6} AMIs, {acct.instances} instances, {acct.groups} groups {dict(acct.spec)}, "
                        f"{acct.due_marks} due Custodian marks: populated in {acct.seconds:.0f} s, "
                        f"running {who} at {latency} ms",
                        flush=True,
                    )
                    for label in runs:
                        if label == "8 days later":
                            age_account(sb, 8)
                        before = Truth.read(sb)
                        sb.configure(latency_ms=latency, token_buckets=bool(args.token_buckets))
                        with listing(sb, args.listing), ReleaseProbe(sb, args.release_probe) as probe:
                            if who == "custodian":
                                text = CUSTODIAN_DEREGISTER if label == "8 days later" else CUSTODIAN_POLICY
                                data, process, counts = run_custodian(sb, env, text)
                            else:
                                data, process, counts = run_ours(sb, env, policies[who])
                        counts = {k: v - probe.calls.get(k, 0) for k, v in counts.items() if v > probe.calls.get(k, 0)}
                        throttles = sb.token_buckets.as_dict()["throttled_by_caller"]
                        sb.configure(latency_ms=0, token_buckets=False)
                        unsafe_marks, unsafe_gone = before.unsafe(Truth.read(sb))
                        r = Result(
                            n,
                            who,
                            label,
                            data["seconds"],
                            process,
                            counts,
                            data["outcome"],
                            os.getloadavg()[0],
                            latency=latency,
                            throttled=sum(throttles.get("testing", {}).values()),
                            pacing=data.get("pacing"),
                            probe=dict(probe.outcomes),
                            unsafe_marks=unsafe_marks,
                            unsafe_deregistrations=unsafe_gone,
                        )
                        results.append(r)
                        paced = f"  paced, waited {r.pacing['waited_seconds']:.1f} s" if r.pacing else ""
                        print(
                            f"    {label:<13} {r.seconds:7.2f} s  {sum(counts.values()):5d} requests  "
                            f"{r.throttled} throttled{paced}  probe {r.probe or '-'}  load {r.load:.1f}  "
                            f"unsafe: {r.unsafe_marks} marked, {r.unsafe_deregistrations} deregistered  "
                            f"{r.outcome}",
                            flush=True,
                        )
    finally:
        sb.stop()
    report(results, accounts)


def report(results: list[Result], accounts: dict[int, Account]) -> None:
    print(
        "\n| AMIs | latency ms | contender | run | run s | process s | load | requests | requests/s | throttled "
        "| paced: waited s | release probe | unsafe marks | unsafe deregistrations | by action | outcome |"
    )
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|")
    for r in results:
        by_action = ", ".join(f"{a.split(':')[1]} {c}" for a, c in sorted(r.requests.items(), key=lambda kv: -kv[1]))
        total = sum(r.requests.values())
        waited = f"{r.pacing['waited_seconds']:.1f}" if r.pacing else "-"
        probe = ", ".join(f"{k} {v}" for k, v in sorted(r.probe.items())) or "-"
        print(
            f"| {r.size:,} | {r.latency} | {r.contender} | {r.run} | {r.seconds:.2f} | {r.process:.2f} | "
            f"{r.load:.1f} | {total} | {total / max(r.seconds, 1e-9):.1f} | {r.throttled} | {waited} | {probe} | "
            f"{r.unsafe_marks} | {r.unsafe_deregistrations} | {by_action} | {r.outcome} |"
        )
    by = {(r.size, r.latency, r.contender, r.run): r for r in results}
    latencies = list(dict.fromkeys(r.latency for r in results))
    runs = list(dict.fromkeys(r.run for r in results))

    def cell(x: Result | None) -> str:
        return f"{x.seconds:.2f} ({sum(x.requests.values())})" if x else "-"

    def ratio(x: Result | None, base: Result | None) -> str:
        return f"{x.seconds / base.seconds:.2f}" if x and base else "-"

    print(
        "\n| AMIs | latency ms | run | Custodian s (requests) | ours s (requests) | ours / Custodian "
        "| ours uncapped s | uncapped / Custodian | ours without AWS checks s | with / without checks |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in sorted(accounts):
        for lat in latencies:
            for label in runs:
                c = by.get((n, lat, "custodian", label))
                o = by.get((n, lat, "ours", label))
                u = by.get((n, lat, "ours-uncapped", label))
                on = by.get((n, lat, "ours-nochecks", label))
                if not any((c, o, u, on)):
                    continue
                print(
                    f"| {n:,} | {lat} | {label} | {cell(c)} | {cell(o)} | {ratio(o, c)} | {cell(u)} | "
                    f"{ratio(u, c)} | {cell(on)} | {ratio(o, on)} |"
                )
    if any(r.contender == "ours-uncapped-nochecks" for r in results):
        print("\n| AMIs | latency ms | run | ours uncapped s | uncapped without checks s | with / without |")
        print("|---:|---|---|---:|---:|---:|")
        for n in sorted(accounts):
            for lat in latencies:
                for label in runs:
                    u = by.get((n, lat, "ours-uncapped", label))
                    un = by.get((n, lat, "ours-uncapped-nochecks", label))
                    if u or un:
                        print(f"| {n:,} | {lat} | {label} | {cell(u)} | {cell(un)} | {ratio(u, un)} |")


if __name__ == "__main__":
    main()
