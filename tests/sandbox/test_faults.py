"""Fault injection, in each protocol, and the HTTP control surface."""

from __future__ import annotations

import json
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

NO_RETRY = Config(retries={"total_max_attempts": 1})


def client(sb, service, config=NO_RETRY):
    import boto3

    return boto3.client(
        service,
        endpoint_url=sb.endpoint_url,
        region_name=sb.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def code_of(call):
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_fail_ec2_query_protocol_n_times_then_success(sandbox):
    ec2 = client(sandbox, "ec2")
    image = sandbox.account["aged_images"][0]["image_id"]
    sandbox.faults.fail("CreateTags", code="UnauthorizedOperation", message="nope", times=2)
    tag = lambda: ec2.create_tags(Resources=[image], Tags=[{"Key": "k", "Value": "v"}])
    assert code_of(tag) == ("UnauthorizedOperation", 400)
    assert code_of(tag) == ("UnauthorizedOperation", 400)
    tag()
    assert sandbox.request_counts()["ec2:CreateTags"] == 3


def test_fail_autoscaling_and_elbv2_and_cloudwatch(fleet):
    fleet.faults.fail("StartInstanceRefresh", code="ResourceContention")
    fleet.faults.fail("elasticloadbalancing:DescribeTargetHealth", code="TargetGroupNotFound")
    fleet.faults.fail("DescribeAlarms", code="InternalServiceError", status=500)
    asg, elb, cw = client(fleet, "autoscaling"), client(fleet, "elbv2"), client(fleet, "cloudwatch")
    assert code_of(lambda: asg.start_instance_refresh(AutoScalingGroupName="demo-web-asg"))[0] == "ResourceContention"
    assert code_of(lambda: elb.describe_target_health(TargetGroupArn=fleet.account["target_group_arn"])) == (
        "TargetGroupNotFound",
        400,
    )
    assert code_of(lambda: cw.describe_alarms()) == ("InternalServiceError", 500)
    alarms = cw.describe_alarms(AlarmNames=fleet.account["alarm_names"])["MetricAlarms"]
    assert {a["AlarmName"]: a["StateValue"] for a in alarms} == {"demo-web-5xx": "OK", "demo-web-latency": "OK"}


def test_fail_ssm_json_protocol(sandbox):
    ssm = client(sandbox, "ssm")
    sandbox.faults.fail("SendCommand", code="InvalidInstanceId", message="not managed")
    assert code_of(
        lambda: ssm.send_command(
            InstanceIds=["i-1"], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
        )
    ) == ("InvalidInstanceId", 400)


def test_throttle_then_success_and_botocore_retries_it(sandbox):
    ec2 = client(sandbox, "ec2")
    sandbox.faults.throttle("DescribeImages", times=1)
    assert code_of(lambda: ec2.describe_images(Owners=["self"])) == ("RequestLimitExceeded", 503)
    assert ec2.describe_images(Owners=["self"])["Images"]
    asg = client(sandbox, "autoscaling")
    sandbox.faults.throttle("DescribeAutoScalingGroups", times=1)
    assert code_of(lambda: asg.describe_auto_scaling_groups())[0] == "Throttling"
    ssm = client(sandbox, "ssm")
    sandbox.faults.throttle("ListCommands", times=1)
    assert code_of(lambda: ssm.list_commands())[0] == "ThrottlingException"
    # with botocore's default retries two throttles are absorbed
    retrying = client(sandbox, "ec2", config=Config(retries={"mode": "standard", "max_attempts": 3}))
    sandbox.reset_request_counts()
    sandbox.faults.throttle("DescribeVpcs", times=2)
    assert retrying.describe_vpcs()["Vpcs"]
    assert sandbox.request_counts()["ec2:DescribeVpcs"] == 3


def test_clear_faults(sandbox):
    ec2 = client(sandbox, "ec2")
    sandbox.faults.fail("DescribeVpcs", code="Boom", times=5)
    assert code_of(lambda: ec2.describe_vpcs())[0] == "Boom"  # the fault is there...
    sandbox.faults.clear()
    assert sandbox.faults.as_dict() == {"calls": [], "refreshes": [], "ssm": []}
    assert ec2.describe_vpcs()["Vpcs"]  # ...and gone: the four calls it had left are not failed


def _http(sb, method, path, payload=None):
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(
        f"{sb.endpoint_url}/_sandbox/{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_http_control_surface(fleet):
    ec2 = client(fleet, "ec2")
    state = _http(fleet, "GET", "state")
    assert state["account"]["asg_name"] == "demo-web-asg" and state["endpoint_url"] == fleet.endpoint_url
    _http(fleet, "POST", "faults", {"kind": "fail", "action": "DescribeVpcs", "code": "Boom", "times": 1})
    assert code_of(lambda: ec2.describe_vpcs())[0] == "Boom"
    _http(
        fleet,
        "POST",
        "faults",
        [
            {"kind": "throttle", "action": "DescribeSubnets"},
            {"kind": "refresh", "asg_name": "demo-web-asg", "percent": 50, "reason": "x"},
            {"kind": "ssm", "instance_id": "i-123", "exit_code": 2},
        ],
    )
    faults = _http(fleet, "GET", "faults")
    assert len(faults["calls"]) == 1 and faults["refreshes"][0]["percent"] == 50 and faults["ssm"][0]["exit_code"] == 2
    assert _http(fleet, "DELETE", "faults") == {"calls": [], "refreshes": [], "ssm": []}
    ec2.describe_subnets()
    counts = _http(fleet, "GET", "requests")
    assert counts["ec2:DescribeVpcs"] == 1 and counts["ec2:DescribeSubnets"] == 1
    _http(fleet, "DELETE", "requests")
    assert _http(fleet, "GET", "requests") == {}
    image_id = _http(fleet, "POST", "images", {"name": "via-http", "age_days": 70, "tags": {"App": "x"}})["image_id"]
    img = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert img["Name"] == "via-http" and img["OwnerId"] == fleet.account_id
    assert _http(fleet, "POST", "config", {"refresh_batch_seconds": 0.3})["refresh_batch_seconds"] == 0.3
    with pytest.raises(urllib.error.HTTPError) as err:
        _http(fleet, "POST", "faults", {"kind": "nonsense"})
    assert err.value.code == 400


def test_truncate_returns_the_first_page_without_its_token(sandbox):
    """A listing cut short, in AWS's shape: the first page, no NextToken (stock moto 5.2.5 answers
    DescribeLaunchTemplateVersions so); the next call pages normally again."""
    ec2 = client(sandbox, "ec2")
    for n in range(3):
        ec2.create_launch_template(LaunchTemplateName=f"trunc-{n}", LaunchTemplateData={"InstanceType": "t3.micro"})
    listing = lambda: ec2.describe_launch_template_versions(Versions=["$Latest"], MaxResults=2)
    sandbox.faults.truncate("DescribeLaunchTemplateVersions", times=1)
    cut = listing()
    assert len(cut["LaunchTemplateVersions"]) == 2 and "NextToken" not in cut
    whole = listing()
    assert len(whole["LaunchTemplateVersions"]) == 2 and whole["NextToken"]
    for n in range(6):
        sandbox.create_image(f"trunc-img-{n}", age_days=1)
    sandbox.faults.truncate("ec2:DescribeImages", times=1)
    cut = ec2.describe_images(Owners=["self"], MaxResults=5)
    assert len(cut["Images"]) == 5 and "NextToken" not in cut
    assert ec2.describe_images(Owners=["self"], MaxResults=5)["NextToken"]
    sandbox.faults.truncate("DescribeInstances", times=1)
    cut = ec2.describe_instances(MaxResults=5)
    assert "NextToken" not in cut
    asg = client(sandbox, "autoscaling")
    if len(asg.describe_auto_scaling_groups()["AutoScalingGroups"]) > 1:
        sandbox.faults.truncate("DescribeAutoScalingGroups", times=1)
        assert "NextToken" not in asg.describe_auto_scaling_groups(MaxRecords=1)
        assert asg.describe_auto_scaling_groups(MaxRecords=1)["NextToken"]


def test_truncate_empty_answers_a_listing_with_nothing_in_it(sandbox):
    ec2, asg = client(sandbox, "ec2"), client(sandbox, "autoscaling")
    lt = ec2.create_launch_template(LaunchTemplateName="empty-1", LaunchTemplateData={"InstanceType": "t3.micro"})
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    asg.create_launch_configuration(LaunchConfigurationName="empty-lc", ImageId="ami-12c6146b", InstanceType="t3.micro")
    sandbox.faults.truncate("DescribeLaunchTemplateVersions", empty=True, match=lt_id)
    assert (
        ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Latest"])["LaunchTemplateVersions"]
        == []
    )
    assert (
        ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Latest"])["LaunchTemplateVersions"][
            0
        ]["LaunchTemplateId"]
        == lt_id
    )
    sandbox.faults.truncate("DescribeLaunchConfigurations", empty=True)
    names = ["empty-lc"]
    assert asg.describe_launch_configurations(LaunchConfigurationNames=names)["LaunchConfigurations"] == []
    assert asg.describe_launch_configurations(LaunchConfigurationNames=names)["LaunchConfigurations"]
    # a short page: only the first items, no token
    for n in range(2):
        ec2.create_launch_template(LaunchTemplateName=f"short-{n}", LaunchTemplateData={"InstanceType": "t3.micro"})
    sandbox.faults.truncate("DescribeLaunchTemplateVersions", keep=1)
    short = ec2.describe_launch_template_versions(Versions=["$Latest"], MaxResults=2)
    assert len(short["LaunchTemplateVersions"]) == 1 and "NextToken" not in short


def test_a_lost_answer_is_done_and_the_sdks_retry_meets_the_changed_account(sandbox):
    """lose_answer: moto does the call, the client gets 500 InternalError; botocore sends it again,
    as Terraform's Go SDK does, and the retry finds the default egress rule already gone."""
    ec2 = client(sandbox, "ec2")
    group = ec2.create_security_group(GroupName="lost", Description="d", VpcId=sandbox.account["vpc_id"])["GroupId"]
    everything = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    sandbox.faults.lose_answer("ec2:RevokeSecurityGroupEgress")
    assert code_of(lambda: ec2.revoke_security_group_egress(GroupId=group, IpPermissions=everything)) == (
        "InternalError",
        500,
    )
    [sg] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert sg["IpPermissionsEgress"] == []  # it was done all the same
    before = len(sandbox.oddities()["repeats"])
    group2 = ec2.create_security_group(GroupName="lost2", Description="d", VpcId=sandbox.account["vpc_id"])["GroupId"]
    sandbox.faults.lose_answer("RevokeSecurityGroupEgress")
    with_retries = client(sandbox, "ec2", config=Config(retries={"mode": "standard", "max_attempts": 3}))
    revoke = lambda: with_retries.revoke_security_group_egress(GroupId=group2, IpPermissions=everything)
    assert code_of(revoke) == ("InvalidPermission.NotFound", 400)
    assert sandbox.oddities()["repeats"][before:] == []  # an injected loss is meant, not an oddity
