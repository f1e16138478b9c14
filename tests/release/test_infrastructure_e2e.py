"""One release = code + infrastructure: the app's Terraform module, applied with real Terraform
against the sandbox in every release."""

from __future__ import annotations

import json
import shutil
import time
from types import SimpleNamespace

import pytest

from amirelease import bundle, catalog
from amirelease.handoffs import BakeResult, InfrastructureResult, ReleasePlan
from amirelease.ledger import ReleaseLock, ledger_bucket
from amirelease.operators.infrastructure import ApplyInfrastructureOperator
from amirelease.operators.preflight import ReleasePreflightOperator
from amirelease.release import release_id
from tests.conftest import REPO
from tests.release.conftest import (
    clients,
    failure,
    group_images,
    kill_9_while_held,
    ledger_records,
    load_dag,
    mutations,
    outcome,
    run_images,
    task_states,
)

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]

LEDGER = "ami-release-ledger-123456789012"
STATE_KEY = "terraform/demo-web/us-east-1/terraform.tfstate"


def _record(sb, dr):
    return next(r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id)


# calls that change an app's fleet (what a refused release must never make)
FLEET_CALLS = ("autoscaling:", "elasticloadbalancing:", "cloudwatch:", "ec2:CreateLaunchTemplate", "ec2:ModifyLaunch")


def _refused_left_nothing(sb, dr, version: str) -> None:
    """The check refused the release: the bake beside it was stopped, or its AMI deregistered by
    record; no builder, security group, key pair, bundle or ledger record is left; the fleet untouched."""
    ec2, _, s3 = clients(sb)
    assert not [k for k in mutations(sb) if k.startswith(FLEET_CALLS)], mutations(sb)
    assert run_images(sb, dr.run_id) == [], "a refused release keeps no AMI"
    assert mutations(sb).get("ec2:DeregisterImage", 0) == mutations(sb).get("ec2:CreateImage", 0)
    builders = [{"Name": "tag:Purpose", "Values": ["ami-bake-builder"]}]
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    assert not ec2.describe_instances(Filters=builders + live)["Reservations"]
    assert not ec2.describe_security_groups(Filters=builders)["SecurityGroups"]
    assert not [k for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("packer-")]
    key = bundle.bundle_key("demo-web", release_id("demo-web", version, dr.run_id))
    assert not s3.list_objects_v2(Bucket=LEDGER, Prefix=key).get("Contents"), f"{key} kept"
    assert not [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]


@pytest.fixture
def include(tmp_path, monkeypatch):
    """A copy of include/ the test may edit; the pipeline reads it (AMI_RELEASE_INCLUDE_DIR)."""
    root = tmp_path / "include"
    shutil.copytree(REPO / "include", root)
    monkeypatch.setenv("AMI_RELEASE_INCLUDE_DIR", str(root))
    return root


def test_a_module_change_ships_with_the_new_ami_in_one_release(fleet_env, include):
    sb = fleet_env
    entry = include / "apps" / "demo-web.yaml"
    entry.write_text(entry.read_text().replace("    instance_type: t3.micro\n", "    instance_type: t3.small\n", 1))
    dr = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "2.0.0"})
    assert dr.state == "success", outcome(dr)
    ec2, _, _ = clients(sb)
    [ami] = run_images(sb, dr.run_id)
    latest = ec2.describe_launch_template_versions(LaunchTemplateName="demo-web", Versions=["$Latest"])[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    assert (latest["InstanceType"], latest["ImageId"]) == ("t3.small", ami["ImageId"])
    assert group_images(sb) == {ami["ImageId"]}
    _, asg, _ = clients(sb)
    ids = [
        i["InstanceId"]
        for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"][0][
            "Instances"
        ]
    ]
    types = {i["InstanceType"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
    assert types == {"t3.small"}
    [applied] = _record(sb, dr)["infrastructure"]["applied"]
    changed = {"address": "aws_launch_template.web", "resource_type": "aws_launch_template", "action": "update"}
    assert {**changed, "reason": ""} in applied["plan"]["changes"]  # updated in place: no reason to replace


def test_a_plan_that_would_destroy_the_group_is_refused_before_anything_changes(fleet_env, include):
    sb = fleet_env
    main = include / "terraform" / "demo-web" / "main.tf"
    main.write_text(
        main.read_text()
        .replace('resource "aws_autoscaling_group" "web"', 'resource "aws_autoscaling_group" "app"')
        .replace("aws_autoscaling_group.web.", "aws_autoscaling_group.app.")
    )
    (include / "terraform" / "demo-web" / "outputs.tf").write_text(
        (include / "terraform" / "demo-web" / "outputs.tf")
        .read_text()
        .replace("aws_autoscaling_group.web", "aws_autoscaling_group.app")
    )
    before = group_images(sb)
    dr = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "2.1.0"})
    states = task_states(dr)
    assert dr.state == "failed" and states["check_infrastructure"] == "failed", states
    # the bake ran beside the check (dag.test runs one task at a time: before it, or after it and stopped)
    assert states["smoke_test"] == states["apply_infrastructure"] == "upstream_failed", states
    msg = failure(dr, "check_infrastructure")
    assert "would destroy 1 resource(s): aws_autoscaling_group.web (delete)" in msg, msg
    assert "allow_destroy" in msg and "Fix:" in msg and "moved" in msg
    _refused_left_nothing(sb, dr, "2.1.0")
    assert group_images(sb) == before


def test_an_invalid_module_fails_the_check_with_terraform_s_file_and_line(fleet_env, include):
    sb = fleet_env
    main = include / "terraform" / "demo-web" / "main.tf"
    text = main.read_text().replace("  image_id               = var.ami_id", "  imge_id                = var.ami_id")
    main.write_text(text)
    line = text.splitlines().index("  imge_id                = var.ami_id") + 1
    dr = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "2.2.0"})
    assert dr.state == "failed" and task_states(dr)["check_infrastructure"] == "failed"
    msg = failure(dr, "check_infrastructure")
    assert "terraform validate failed" in msg and f"main.tf:{line}" in msg and "imge_id" in msg, msg
    _refused_left_nothing(sb, dr, "2.2.0")


def _apply(plan: dict, bake: dict, ti: SimpleNamespace, started) -> dict:
    op = ApplyInfrastructureOperator(
        task_id="apply_infrastructure", plan=plan, bake=bake, region_name="us-east-1", lock_timeout=5
    )
    return op.execute({"ti": ti, "dag_run": SimpleNamespace(start_date=started), "run_id": ti.run_id})


def test_a_killed_apply_leaves_no_terraform_and_the_retry_converges(fleet_env):
    sb = fleet_env
    ti = SimpleNamespace(dag_id="ami_release", run_id="manual__kill-apply", try_number=1)
    plan = ReleasePreflightOperator(
        task_id="preflight", app="demo-web", version="9.9.9", region_name="us-east-1"
    ).execute({"run_id": ti.run_id})
    rp = ReleasePlan.from_xcom(plan)
    bundle.BundleStore(sb.client("s3"), ledger_bucket()).put(
        rp.bundle.key, bundle.pack_app(catalog.get_app("demo-web"))
    )
    assert ReleaseLock(sb.client("s3"), ledger_bucket(), "demo-web").try_acquire(
        {"dag_id": ti.dag_id, "run_id": ti.run_id, "app": "demo-web", "acquired_at": "2000-01-01T00:00:00Z"}
    )[0]
    ami = sb.create_image("demo-web-9.9.9", tags={"App": "demo-web", "ReleaseId": rp.release_id})
    bake = BakeResult(
        release_id=rp.release_id, ami_id=ami, amis={"us-east-1": ami}, source_ami=rp.source_ami, reused=False
    ).to_xcom()
    # Terraform hangs in the middle of the apply (a slow AWS), holding the state lock, when the task dies
    sb.faults.delay("ec2:CreateLaunchTemplateVersion", seconds=30, times=1)
    kill_9_while_held(
        sb,
        _apply,
        (plan, bake, ti, None),
        call="ec2:CreateLaunchTemplateVersion",
        tool="terraform",
        never="the apply never reached the launch template",
        reach_within=120,
        die_within=30,
    )
    time.sleep(30)  # the held-back call lands after all, as a late AWS answer would

    ti.try_number = 2  # the retry: releases the lock its earlier try left, re-plans and applies
    result = InfrastructureResult.from_xcom(_apply(plan, bake, ti, None))
    ec2, asg, s3 = clients(sb)
    assert not [o for o in s3.list_objects_v2(Bucket=LEDGER).get("Contents", []) if o["Key"].endswith(".tflock")]
    assert (
        len(
            ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": ["demo-web"]}])[
                "LaunchTemplates"
            ]
        )
        == 1
    )
    assert len(asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"]) == 1
    latest = ec2.describe_launch_template_versions(LaunchTemplateName="demo-web", Versions=["$Latest"])[
        "LaunchTemplateVersions"
    ][0]
    assert latest["LaunchTemplateData"]["ImageId"] == ami
    assert result.regions[0].launch_template_version == latest["VersionNumber"]
    ti.try_number = 3  # and the same inputs once more: "No changes"
    again = InfrastructureResult.from_xcom(_apply(plan, bake, ti, None))
    assert again.regions[0].plan.line() == "0 to add, 0 to change, 0 to destroy"
    ReleaseLock(sb.client("s3"), ledger_bucket(), "demo-web").release(ti.dag_id, ti.run_id)
    json.dumps(result.to_xcom())
