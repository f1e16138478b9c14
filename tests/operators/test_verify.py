"""VerifyReleaseOperator alone against the sandbox, in seconds: its inputs are the hand-offs it
is given, as roll_out would give them; the group and the app's alarms are made by the test's own
clients (setup the product never does itself), so the account is exactly what the test says."""

from __future__ import annotations

import pytest

from amirelease.errors import VerificationError
from amirelease.handoffs import RefreshHandle, VerifySummary
from amirelease.operators.verify import VerifyReleaseOperator
from tests.release.conftest import mutations
from tests.retention.conftest import make_group

ALARMS = ("demo-web-5xx", "demo-web-latency")  # what demo-web's catalog entry asks verify to read


def _verify(plan, group: str, ami: str) -> dict:
    handle = RefreshHandle("us-east-1", group, "refresh-x", "lt-x", 1, ami, 30, status="Successful")
    op = VerifyReleaseOperator(
        task_id="verify", region_name="us-east-1", plan=plan.to_xcom(), refreshes=[handle.to_xcom()]
    )
    return op.execute({})


def test_it_verifies_a_group_on_its_ami_and_names_what_is_not(release_env, release_plan):
    sb = release_env
    ami = sb.account["vendor_images"]["amazon-linux"]
    make_group(sb, "verify-asg", ami, desired=2)
    for name in ALARMS:
        sb.put_alarm(name)
    cloudwatch = sb.client("cloudwatch", internal=True)
    sb.reset_request_counts()

    summary = VerifySummary.from_xcom(_verify(release_plan(), "verify-asg", ami))
    [check] = summary.groups
    assert summary.verified and (check.in_service, check.on_new_ami) == (2, 2), check
    assert set(check.alarms) == set(ALARMS) and summary.problems == ()

    other = sb.account["vendor_images"]["windows"]
    with pytest.raises(VerificationError, match=f"verify-asg: 2 in-service instance\\(s\\) not on {other}") as err:
        _verify(release_plan(), "verify-asg", other)
    assert "ami_rollback" in str(err.value)

    cloudwatch.set_alarm_state(AlarmName="demo-web-5xx", StateValue="ALARM", StateReason="test")
    with pytest.raises(VerificationError, match="alarm demo-web-5xx is ALARM"):
        _verify(release_plan(), "verify-asg", ami)
    cloudwatch.delete_alarms(AlarmNames=["demo-web-latency"])
    with pytest.raises(VerificationError, match="alarm demo-web-latency is MISSING"):
        _verify(release_plan(), "verify-asg", ami)
    assert mutations(sb) == {}  # verify only reads (the test's own calls are not counted as the product's)


def test_a_composite_alarm_the_app_watches_is_read_not_missing(release_env, release_plan):
    """DescribeAlarms lists only metric alarms unless asked for composite ones too (the sandbox
    answers as AWS does): verify asks for both, so an app may watch one rule over several alarms."""
    sb = release_env
    ami = sb.account["vendor_images"]["amazon-linux"]
    make_group(sb, "verify-asg", ami, desired=1)
    sb.put_alarm("demo-web-5xx")
    cloudwatch = sb.client("cloudwatch", internal=True)
    cloudwatch.put_composite_alarm(AlarmName="demo-web-latency", AlarmRule='ALARM("demo-web-5xx")')
    cloudwatch.set_alarm_state(AlarmName="demo-web-latency", StateValue="OK", StateReason="quiet")

    [check] = VerifySummary.from_xcom(_verify(release_plan(), "verify-asg", ami)).groups
    assert check.alarms == {"demo-web-5xx": "OK", "demo-web-latency": "OK"}, check.alarms

    cloudwatch.set_alarm_state(AlarmName="demo-web-latency", StateValue="ALARM", StateReason="a child is in ALARM")
    with pytest.raises(VerificationError, match="alarm demo-web-latency is ALARM"):
        _verify(release_plan(), "verify-asg", ami)
