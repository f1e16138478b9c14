"""Drift (issue 20, item 4) through Airflow against the sandbox, with real Terraform: after a
real release of demo-web, a change of the group's MaxSize and a new default launch-template
version made by hand through the API are both reported by one ami_drift run (log, drift record,
"drift found" on the app's SNS topic), and the plan changed nothing (no state written, no lock,
no AWS change besides the drift record); a second run keeps "first seen" and tells nobody again;
a release clears them (the next run finds no drift and deletes the record)."""

from __future__ import annotations

import json
import logging

import pytest

from amirelease.drift.store import drift_key
from tests.notify.sns import Inbox
from tests.release.conftest import LEDGER_BUCKET, clients, load_dag, mutations, outcome

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]

STATE = "terraform/demo-web/us-east-1/terraform.tfstate"


def _drift_record(s3):
    try:
        return json.loads(s3.get_object(Bucket=LEDGER_BUCKET, Key=drift_key("demo-web", "us-east-1"))["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _state(s3) -> tuple[str, bool]:
    """(the state object's ETag, whether a Terraform lock object exists)."""
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=LEDGER_BUCKET, Prefix="terraform/demo-web/")["Contents"]}
    return s3.head_object(Bucket=LEDGER_BUCKET, Key=STATE)["ETag"], f"{STATE}.tflock" in keys


def test_drift_made_by_hand_is_reported_and_a_release_clears_it(fleet_env, capfd, caplog):
    sb = fleet_env
    ec2, asg, s3 = clients(sb)
    inbox = Inbox(sb)
    drift = load_dag("ami_drift")

    # 0. the fleet as released: no drift, no record, nobody told
    clean = drift.test()
    assert clean.state == "success", outcome(clean)
    assert _drift_record(s3) is None
    assert [m["Subject"] for m in inbox.drain()] == []

    # 1. by hand: MaxSize 6 -> 10, and a new launch template version (t3.small) made the default
    asg.update_auto_scaling_group(AutoScalingGroupName="demo-web-asg", MaxSize=10)
    lt = ec2.describe_launch_templates(LaunchTemplateNames=["demo-web"])["LaunchTemplates"][0]
    new = ec2.create_launch_template_version(
        LaunchTemplateId=lt["LaunchTemplateId"],
        SourceVersion=str(lt["LatestVersionNumber"]),
        LaunchTemplateData={"InstanceType": "t3.small"},
    )["LaunchTemplateVersion"]["VersionNumber"]
    ec2.modify_launch_template(LaunchTemplateId=lt["LaunchTemplateId"], DefaultVersion=str(new))
    state_before = _state(s3)
    sb.reset_request_counts()
    capfd.readouterr()

    # 2. one run reports both, in words: the record, the log, one message
    found = drift.test()
    assert found.state == "success", outcome(found)
    log = capfd.readouterr().out
    record = _drift_record(s3)
    assert record is not None, "no drift record written"
    by_address = {r["address"]: r for r in record["resources"]}
    assert set(by_address) == {"aws_autoscaling_group.web", "aws_launch_template.web"}, record["resources"]
    asg_attrs = {a["path"]: (a["before"], a["after"]) for a in by_address["aws_autoscaling_group.web"]["attributes"]}
    assert asg_attrs.get("max_size") == ("6", "10"), asg_attrs
    lt_attrs = {a["path"]: (a["before"], a["after"]) for a in by_address["aws_launch_template.web"]["attributes"]}
    assert lt_attrs.get("default_version") == (str(new - 1), str(new)), lt_attrs
    assert record["first_seen"] == record["last_seen"] and record["release_id"], record
    assert "aws_autoscaling_group.web changed outside a release: max_size: 6 -> 10" in log, log[-3000:]
    messages = inbox.drain()
    assert [m["Subject"] for m in messages] == ["demo-web: drift found"], messages
    body = messages[0]["Message"]
    for words in (
        "App: demo-web",
        f"first seen {record['first_seen']}",
        "aws_autoscaling_group.web changed outside a release: max_size: 6 -> 10",
        f"aws_launch_template.web changed outside a release: default_version: {new - 1} -> {new}",
        "Asked to act: web-team on-call (#web-oncall)",
        "/dags/ami_drift/runs/",
    ):
        assert words in body, (words, body)
    # read-only: the state object untouched, no lock left, nothing changed in AWS but the record
    assert _state(s3) == state_before
    assert set(mutations(sb)) <= {"s3:PutObject", "sqs:DeleteMessage"}, mutations(sb)

    # 3. the next run: the same drift, first seen kept, nobody told again
    again = drift.test()
    assert again.state == "success", outcome(again)
    later = _drift_record(s3)
    assert later["first_seen"] == record["first_seen"] and later["last_seen"] >= record["last_seen"], later
    assert inbox.drain() == []

    # 4. a release re-applies the module: the next run finds no drift and clears the record. The
    #    app's topic is gone meanwhile: the notifications fail, the release does not (a warning)
    inbox.remove_topic()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="amirelease.notify"):
        released = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "8.1.0", "notes": "drift"})
    assert released.state == "success", outcome(released)
    warned = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "not sent to sns" in r.getMessage()
    ]
    assert any("release_started" in m and "NotFound" in m for m in warned), warned
    assert any("release_succeeded" in m and "NotFound" in m for m in warned), warned
    inbox = Inbox(sb)
    cleared = drift.test()
    assert cleared.state == "success", outcome(cleared)
    assert _drift_record(s3) is None
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"][0]
    assert g["MaxSize"] == 6
    assert inbox.drain() == []
