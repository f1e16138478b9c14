"""An app's first release creates its fleet with the app's Terraform module, even when AWS loses an
answer half-way through the apply; the fleet it leaves is the one the following tests release on
(the `fleet_env` fixture reuses it)."""

from __future__ import annotations

import pytest

from tests.release.conftest import clients, group_images, ledger_records, load_dag, outcome, run_images

# not in the "fleet" group (tests/conftest.py fleet_env): this test resets its worker's account, so
# amid that group it would take the fleet away from the next test, which would build it again
pytestmark = [pytest.mark.e2e]


def _record(sb, dr):
    return next(r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id)


def test_first_release_creates_the_fleet(release_env):
    sb = release_env
    _, asg, s3 = clients(sb)
    assert asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"] == []
    # AWS does the first RevokeSecurityGroupEgress (the default rule Terraform removes from the new
    # security group) but its answer is lost: the Go SDK's retry finds the rule gone, Terraform
    # fails the apply and marks the group tainted (seen once in a full run, 2026-12-06). The apply's
    # retry replaces that group: this release created it, so the destroy refusal lets it.
    sb.faults.lose_answer("ec2:RevokeSecurityGroupEgress", match="0.0.0.0/0")
    first = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "1.0.0", "notes": "the fleet"})
    assert first.state == "success", outcome(first)
    assert {ti.task_id: ti.try_number for ti in first.get_task_instances()}["apply_infrastructure"] == 2
    infrastructure = _record(sb, first)["infrastructure"]
    [checked] = infrastructure["check"]["regions"]
    assert checked["plan"]["add"] >= 8 and checked["plan"]["destroy"] == 0  # the whole fleet, nothing there before
    # the retry's plan: what the failed try had not made, and the group it left tainted, replaced
    [plan1] = infrastructure["applied"]
    destroying = [(c["address"], c["action"], c["reason"]) for c in plan1["plan"]["changes"] if c["action"] != "create"]
    assert destroying == [("aws_security_group.web", "replace", "tainted")], destroying  # its own, half-made
    assert plan1["plan"]["destroy"] == 1
    created = {c["resource_type"] for c in checked["plan"]["changes"] if c["action"] == "create"}
    assert {
        "aws_launch_template",
        "aws_autoscaling_group",
        "aws_lb_target_group",
        "aws_lb_listener_rule",
        "aws_cloudwatch_metric_alarm",
        "aws_security_group",
        "aws_ssm_parameter",
    } <= created
    [ami1] = run_images(sb, first.run_id)
    assert group_images(sb) == {ami1["ImageId"]}
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"][0]
    assert len(group["Instances"]) == 3 and group["TargetGroupARNs"]  # desired capacity from the catalog
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ami-release-ledger-123456789012")["Contents"]}
    assert "terraform/demo-web/us-east-1/terraform.tfstate" in keys  # the state, for the next release
