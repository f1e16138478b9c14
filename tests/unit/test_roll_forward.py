"""operators/roll_forward.py, pure: when a failed release starts ami_rollback on its own, and with what."""

from __future__ import annotations

import pytest

from amirelease.operators.roll_forward import decision, rollback_conf, rollback_run_id

OPTED_IN = {"rollback": {"automatic": True}}


def _outcome(**kw):
    out = {
        "app": "demo-web",
        "version": "1.4.0",
        "release_id": "demo-web-1.4.0-abc123",
        "kind": "release",
        "outcome": "failed",
        "failed_task": "verify",
        "reason": "VerificationError: 2 of 3 instances unhealthy\nmore",
    }
    return {**out, **kw}


@pytest.mark.parametrize(
    ("outcome", "document", "words"),
    [
        (_outcome(outcome="succeeded", failed_task=None), OPTED_IN, "the release succeeded"),
        (_outcome(kind="rollback"), OPTED_IN, "never starts another"),
        (_outcome(failed_task="smoke_test"), OPTED_IN, "before it reached the fleet"),
        (_outcome(failed_task="apply_infrastructure"), OPTED_IN, "before it reached the fleet"),
        (_outcome(), {}, "does not opt in"),
        (_outcome(), {"rollback": {"automatic": False}}, "does not opt in"),
        (None, OPTED_IN, "no outcome"),
    ],
)
def test_no_rollback_unless_a_release_failed_on_the_fleet_of_an_app_that_opts_in(outcome, document, words):
    assert words in (decision(outcome, document) or "")


@pytest.mark.parametrize("failed_task", ["verify", "wait_for_refresh", "wait_for_refresh[0]"])
def test_a_failed_refresh_or_verification_of_an_opted_in_app_rolls_forward(failed_task):
    assert decision(_outcome(failed_task=failed_task), OPTED_IN) is None


def test_the_rollback_replaces_the_failed_release_with_an_empty_target_and_says_why():
    conf = rollback_conf(_outcome(), "ami_release", "demo-web_1.4.0__2026-12-05T08:00:00Z")
    assert conf["app"] == "demo-web" and conf["target"] is None and conf["replaces"] == "demo-web-1.4.0-abc123"
    assert conf["forensic_hold"] is True and conf["confirm_rolled_back"] is False
    assert conf["reason"] == (
        "automatic: demo-web 1.4.0 (demo-web-1.4.0-abc123) failed at 'verify' in ami_release run "
        "demo-web_1.4.0__2026-12-05T08:00:00Z: VerificationError: 2 of 3 instances unhealthy"
    )
    assert rollback_run_id(_outcome()) == "rollback_demo-web__auto_demo-web-1.4.0-abc123"


LEDGER_BUCKET = "ami-release-ledger-123456789012"


def _record(n: int, outcome: str = "succeeded", **kw):
    return {
        "app": "demo-web",
        "version": f"1.{n}.0",
        "release_id": f"demo-web-1.{n}.0-r{n}",
        "kind": "release",
        "outcome": outcome,
        "started_at": f"2026-01-{n + 1:02d}T00:00:00Z",
        "finished_at": f"2026-01-{n + 1:02d}T00:10:00Z",
        "bundle": {"key": f"bundles/demo-web/{n}.tar.gz", "sha256": f"{n:064x}"},
        "amis": {"us-east-1": f"ami-{n:017x}"},
        **kw,
    }


def test_replaces_decides_the_target_even_when_aws_rolled_the_fleet_back_to_the_good_release(sandbox, monkeypatch):
    """The fleet runs the good release 1.2.0 again (AWS rolled the failed refresh back), but the
    launch template names the failed 1.3.0. A rollback asked with replaces=1.3.0 re-releases
    1.2.0; without it, it would pick 1.1.0 (1.2.0 being 'what runs now')."""
    import logging

    from amirelease.aws import AwsClients
    from amirelease.ledger import Ledger
    from amirelease.operators.rollback import resolve_target

    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", LEDGER_BUCKET)
    ledger = Ledger(sandbox.client("s3"), LEDGER_BUCKET)
    for record in (_record(1), _record(2), _record(3, outcome="failed", failed_task="verify")):
        ledger.put(record)
    good = sandbox.create_image("demo-web-1.2.0", tags={"App": "demo-web", "ReleaseId": "demo-web-1.2.0-r2"})
    ec2, asg = sandbox.client("ec2", internal=True), sandbox.client("autoscaling", internal=True)
    lt = ec2.create_launch_template(
        LaunchTemplateName="demo-web-rf", LaunchTemplateData={"ImageId": good, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName="demo-web-asg", MinSize=1, MaxSize=1, DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateId": lt}, VPCZoneIdentifier=",".join(sandbox.account["subnet_ids"]),
    )  # fmt: skip

    def resolve(**ask):
        clients, log = AwsClients(region_name="us-east-1"), logging.getLogger()
        return resolve_target(clients, ledger, "demo-web", {"reason": "automatic: 1.3.0", **ask}, log).to_xcom()

    asked = resolve(replaces="demo-web-1.3.0-r3")
    assert asked["current_release_id"] == "demo-web-1.2.0-r2"  # what the fleet runs
    assert asked["target_release_id"] == "demo-web-1.2.0-r2" and asked["replaces_release_id"] == "demo-web-1.3.0-r3"
    assert asked["replaces_amis"] == {"us-east-1": f"ami-{3:017x}"}
    assert resolve()["target_release_id"] == "demo-web-1.1.0-r1"  # a person's rollback: the one before what runs
    with pytest.raises(Exception, match="started after demo-web-1.2.0-r2"):
        resolve(replaces="demo-web-1.2.0-r2")
    with pytest.raises(Exception, match="not a release of demo-web in the ledger"):
        resolve(replaces="demo-web-9.9.9-r9")
