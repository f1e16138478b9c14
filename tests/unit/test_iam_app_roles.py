"""Each app with aws.role_arn gets its own role: what its policies say (pure)."""

from __future__ import annotations

import json

from amirelease import cli, iam


def test_an_app_roles_tools_actions_leave_the_workers_role():
    roles = iam.actions_by_role()
    web = set(roles["app:demo-web"])
    assert "ec2:CreateLaunchTemplateVersion" in web and "ec2:RunInstances" in web  # its module and its Packer
    assert "s3:PutObject" in web  # its own Terraform state
    bake = set(roles["bake"])
    assert {"sts:AssumeRole", "sts:TagSession"} <= bake
    assert "ec2:RunInstances" not in bake and "ec2:CreateLaunchTemplateVersion" not in bake


def test_the_app_policy_confines_mutations_to_its_own_tag_state_and_parameters():
    doc = iam.app_policy("demo-web", "ami-release-ledger-123456789012")
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    change = by_sid["ChangeOnlyThisAppsResources"]
    assert change["Condition"] == {"StringEquals": {"aws:ResourceTag/App": "${aws:PrincipalTag/App}"}}
    assert "autoscaling:UpdateAutoScalingGroup" in change["Action"]
    create = by_sid["CreateOnlyTaggedForThisApp"]
    assert create["Condition"]["StringEqualsIfExists"]["aws:RequestTag/App"] == "${aws:PrincipalTag/App}"
    assert (
        by_sid["OwnTerraformState"]["Resource"][1]
        == "arn:aws:s3:::ami-release-ledger-123456789012/terraform/demo-web/*"
    )
    assert by_sid["OwnParameters"]["Resource"] == "arn:aws:ssm:*:*:parameter/demo-web/*"
    every = {a for s in doc["Statement"] for a in s["Action"]}
    assert every == set(iam.actions_by_role()["app:demo-web"])  # nothing lost in the split
    assert all(a.split(":", 1)[1].startswith(("Describe", "List", "Get")) for a in by_sid["Read"]["Action"])


def test_the_trust_policy_and_the_cli(capsys):
    trust = iam.app_trust_policy("demo-web", "arn:aws:iam::1:role/bake")
    [stmt] = trust["Statement"]
    assert stmt["Principal"] == {"AWS": "arn:aws:iam::1:role/bake"}
    assert stmt["Condition"] == {"StringEquals": {"aws:RequestTag/App": "demo-web"}}
    assert cli.main(["iam-policy", "--app", "demo-win", "--bucket", "b"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"permissions", "trust"}
    assert "arn:aws:s3:::b/terraform/demo-win/*" in json.dumps(out["permissions"])
