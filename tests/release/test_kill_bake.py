"""kill -9 of the bake task while Packer runs: no Packer process survives the task, and the
retry removes everything the killed try left (builder, key pair, security group, var files)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from amirelease import bundle, catalog
from amirelease.handoffs import BakeResult, ReleasePlan
from amirelease.ledger import ledger_bucket
from amirelease.operators.bake import BakeAmiOperator, key_pair_name
from amirelease.operators.preflight import ReleasePreflightOperator
from tests.release.conftest import clients, kill_9_while_held, run_images, running_instances

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]

RUN_ID = "manual__kill-9-test"


def _bake(plan: dict) -> None:
    BakeAmiOperator(task_id="bake", plan=plan, region_name="us-east-1").execute({"run_id": RUN_ID})


def test_kill_9_mid_packer_leaves_nothing_after_the_retry(fleet_env, tmp_path, monkeypatch):
    sb = fleet_env
    # A private temp folder: a bake on another xdist worker (or the cluster test's) sweeps dead
    # tasks' folders from the shared /tmp too, and would take this one before the retry could.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ec2, _, _ = clients(sb)
    plan = ReleasePreflightOperator(
        task_id="preflight", app="demo-web", version="8.8.8", region_name="us-east-1"
    ).execute({"run_id": RUN_ID})
    rp = ReleasePlan.from_xcom(plan)
    store = bundle.BundleStore(sb.client("s3"), ledger_bucket())
    store.put(rp.bundle.key, bundle.pack_app(catalog.get_app("demo-web")))  # what check_infrastructure stores
    # Packer stops the builder before taking the image: hold that call back, so the task is
    # killed while Packer waits, with its builder, key pair and security group in place.
    sb.faults.delay("ec2:StopInstances", seconds=25, times=1)

    def while_packer_waits() -> None:
        assert running_instances(sb, "ami-bake-builder")
        groups = ec2.describe_security_groups(Filters=[{"Name": "tag:ReleaseId", "Values": [rp.release_id]}])
        assert groups["SecurityGroups"] and not groups["SecurityGroups"][0]["IpPermissions"]  # no port opened

    pid = kill_9_while_held(
        sb,
        _bake,
        (plan,),
        call="ec2:StopInstances",
        tool="packer",
        never="Packer never got to stopping its builder",
        reach_within=90,
        die_within=20,
        at_kill=while_packer_waits,
    )
    leftovers = list(Path(tempfile.gettempdir()).glob(f"amirelease-packer-{pid}-*"))
    assert leftovers, "the killed try's working folder is still there (nothing ran after the kill)"

    result = BakeResult.from_xcom(
        BakeAmiOperator(task_id="bake", plan=plan, region_name="us-east-1").execute({"run_id": RUN_ID})
    )  # the retry
    assert not result.reused and len(run_images(sb, RUN_ID)) == 1
    assert running_instances(sb, "ami-bake-builder") == []
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "tag:ReleaseId", "Values": [rp.release_id]}])["SecurityGroups"]
        == []
    )
    assert (
        ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [key_pair_name(rp.release_id)]}])["KeyPairs"]
        == []
    )
    assert not [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("packer_")]
    assert not [p for p in leftovers if p.exists()], "the retry removes a dead task's var files"


def test_the_builder_is_reachable_only_from_the_configured_network(fleet_env, release_plan, monkeypatch):
    """Packer's own temporary group opened port 0 to 0.0.0.0/0; ours opens the communicator port
    from the VPC (or [ami_release] builder_ingress_cidrs), and nothing without a communicator."""
    from amirelease.handoffs import RegionNetwork

    sb = fleet_env
    ec2, _, _ = clients(sb)
    net = RegionNetwork(
        region="us-east-1",
        vpc_id=sb.account["vpc_id"],
        vpc_cidr="10.20.0.0/16",
        subnet_ids=tuple(sb.account["subnet_ids"]),
    )
    op = BakeAmiOperator(task_id="bake", plan={}, region_name="us-east-1")
    hook = op.clients.ec2_release()  # the release's EC2 hook, as the task uses it (its calls count for the IAM check)
    ec2 = hook.conn
    group = op._builder_security_group(hook, release_plan(networks=(net,), release_id="r-sg"), "provisioned")
    [perm] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert (perm["FromPort"], perm["ToPort"]) == (22, 22) and perm["IpRanges"] == [{"CidrIp": "10.20.0.0/16"}]
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__BUILDER_INGRESS_CIDRS", "10.99.0.0/24, 10.98.0.0/24")
    group = op._builder_security_group(hook, release_plan(networks=(net,), release_id="r-sg2"), "provisioned")
    [perm] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert sorted(r["CidrIp"] for r in perm["IpRanges"]) == ["10.98.0.0/24", "10.99.0.0/24"]
    none = op._builder_security_group(hook, release_plan(networks=(net,), release_id="r-sg3"), "unprovisioned")
    assert ec2.describe_security_groups(GroupIds=[none])["SecurityGroups"][0]["IpPermissions"] == []


def test_kill_9_after_packer_registered_the_ami_the_retry_adopts_it(fleet_env, tmp_path, monkeypatch):
    """Packer tags the AMI only once it is available (on AWS it is pending for minutes): a bake
    killed in between leaves an untagged AMI. The retry finds it by the release's AMI name and
    adopts it (tags it, one AMI); before, it looked by tag only, found nothing, and Packer then
    refused the name ("AMI Name ... is used by an existing AMI"): the release failed and the
    untagged AMI stayed (found by the container test's fault check, docs/containers.md)."""
    sb = fleet_env
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ec2, _, _ = clients(sb)
    run_id = "manual__kill-9-untagged"
    plan = ReleasePreflightOperator(
        task_id="preflight", app="demo-web", version="8.8.9", region_name="us-east-1"
    ).execute({"run_id": run_id})
    rp = ReleasePlan.from_xcom(plan)
    store = bundle.BundleStore(sb.client("s3"), ledger_bucket())
    store.put(rp.bundle.key, bundle.pack_app(catalog.get_app("demo-web")))
    # Packer's tagging of the new AMI held back: the task is killed with the AMI registered, untagged
    sb.faults.delay("ec2:CreateTags", seconds=45, times=1, match="ResourceId.1=ami-")

    def named() -> list[tuple[str, str | None]]:
        images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [rp.ami_name]}])["Images"]
        return [(i["ImageId"], {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("ReleaseId")) for i in images]

    def bake() -> None:
        BakeAmiOperator(task_id="bake", plan=plan, region_name="us-east-1").execute({"run_id": run_id})

    kill_9_while_held(
        sb, bake, (), call="ec2:CreateTags", tool="packer", never="Packer never tagged", reach_within=120, die_within=20
    )
    [(ami, tag)] = named()
    assert tag is None, "the killed try's AMI is untagged"
    result = BakeResult.from_xcom(
        BakeAmiOperator(task_id="bake", plan=plan, region_name="us-east-1").execute({"run_id": run_id})
    )  # the retry
    assert result.reused and result.ami_id == ami, result
    assert named() == [(ami, rp.release_id)] and [i["ImageId"] for i in run_images(sb, run_id)] == [ami]
    assert running_instances(sb, "ami-bake-builder", rp.release_id) == []
