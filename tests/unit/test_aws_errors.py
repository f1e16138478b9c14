"""One reader of AWS's error codes (issue 22): ``errors.aws_error`` turns a botocore error into its
code, message, status, call and family. The answers here are the sandbox's real ones, parsed by
botocore as in production; the few families the sandbox cannot produce by itself (throttling, a
5xx, access denied, an endpoint that does not serve a call) are its injected faults, still real
HTTP answers. The pure table covers AWS's other spellings."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from amirelease.errors import AwsErrorFamily, aws_error, aws_error_code, aws_error_family, error_family

F = AwsErrorFamily


def _client(sb: Any, service: str) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=sb.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


def _refused(call: Any, **kwargs: Any) -> ClientError:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value


def test_the_sandboxs_answers_fall_in_their_families(sandbox):
    ec2, s3 = _client(sandbox, "ec2"), _client(sandbox, "s3")
    s3.create_bucket(Bucket="errors-probe")
    s3.put_object(Bucket="errors-probe", Key="held", Body=b"x")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")
    ami = sandbox.account["vendor_images"]["amazon-linux"]
    sandbox.faults.throttle("DescribeVpcs")
    sandbox.faults.fail("DescribeSubnets", code="InternalError", status=500)
    sandbox.faults.fail("DescribeKeyPairs", code="UnauthorizedOperation", status=403)
    sandbox.faults.fail("DescribeImageReferences", code="InvalidAction", status=400)
    answers = {
        "GetObject, no key": _refused(s3.get_object, Bucket="errors-probe", Key="absent"),
        "HeadObject, no key": _refused(s3.head_object, Bucket="errors-probe", Key="absent"),
        "GetObject, no bucket": _refused(s3.get_object, Bucket="errors-probe-absent", Key="k"),
        "PutObject If-None-Match on a held key": _refused(
            s3.put_object, Bucket="errors-probe", Key="held", Body=b"y", IfNoneMatch="*"
        ),
        "DescribeImages, no AMI": _refused(ec2.describe_images, ImageIds=["ami-0123456789abcdef0"]),
        "DeleteSecurityGroup, no group": _refused(ec2.delete_security_group, GroupId="sg-0123456789abcdef0"),
        "DeleteVpc with a subnet": _refused(ec2.delete_vpc, VpcId=vpc),
        "RunInstances DryRun": _refused(
            ec2.run_instances, ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.micro", DryRun=True
        ),
        "throttled": _refused(ec2.describe_vpcs),
        "5xx": _refused(ec2.describe_subnets),
        "denied": _refused(ec2.describe_key_pairs),
        "not served": _refused(ec2.describe_image_references, ImageIds=[ami]),
        "bad parameter": _refused(ec2.describe_images, ImageIds=["not-an-ami"]),
    }
    got = {what: (aws_error(exc).code, aws_error(exc).family) for what, exc in answers.items()}
    assert got == {
        "GetObject, no key": ("NoSuchKey", F.NOT_FOUND),
        "HeadObject, no key": ("404", F.NOT_FOUND),
        "GetObject, no bucket": ("NoSuchBucket", F.NO_BUCKET),
        "PutObject If-None-Match on a held key": ("PreconditionFailed", F.CONFLICT),
        "DescribeImages, no AMI": ("InvalidAMIID.NotFound", F.NOT_FOUND),
        "DeleteSecurityGroup, no group": ("InvalidGroup.NotFound", F.NOT_FOUND),
        "DeleteVpc with a subnet": ("DependencyViolation", F.IN_USE),
        "RunInstances DryRun": ("DryRunOperation", F.DRY_RUN_OK),
        "throttled": ("RequestLimitExceeded", F.THROTTLED),
        "5xx": ("InternalError", F.SERVER),
        "denied": ("UnauthorizedOperation", F.ACCESS_DENIED),
        "not served": ("InvalidAction", F.UNSUPPORTED),
        "bad parameter": ("InvalidAMIID.Malformed", F.OTHER),
    }
    no_key = aws_error(answers["GetObject, no key"])
    assert (no_key.operation, no_key.status) == ("GetObject", 404) and no_key.message
    assert str(no_key) == f"NoSuchKey: {no_key.message}"
    assert aws_error_code(answers["5xx"]) == "InternalError" and aws_error(answers["5xx"]).status == 500


def test_a_waiters_last_answer_is_read_the_same_way(sandbox):
    ec2 = _client(sandbox, "ec2")
    with pytest.raises(WaiterError) as err:  # instance_running retries on InvalidInstanceID.NotFound
        ec2.get_waiter("instance_running").wait(
            InstanceIds=["i-0123456789abcdef0"], WaiterConfig={"Delay": 1, "MaxAttempts": 1}
        )
    assert (aws_error(err.value).code, aws_error_family(err.value)) == ("InvalidInstanceID.NotFound", F.NOT_FOUND)


def test_what_is_not_an_aws_answer_has_no_family():
    assert aws_error_family(ValueError("InvalidAMIID.NotFound")) is None


@pytest.mark.parametrize(
    ("code", "status", "family"),
    [
        ("InvalidLaunchTemplateId.NotFound", 400, F.NOT_FOUND),
        ("InvalidLaunchTemplateName.NotFoundException", 400, F.NOT_FOUND),
        ("InvalidAMIID.Unavailable", 400, F.NOT_FOUND),  # a deregistered AMI
        ("NoSuchEntity", 404, F.NOT_FOUND),
        ("NotFound", 404, F.NOT_FOUND),
        ("SlowDown", 503, F.THROTTLED),  # S3's throttling is a 503: throttling wins
        ("Throttling", 400, F.THROTTLED),
        ("OperationAborted", 503, F.SERVER),  # any other 5xx: AWS failed on its side
        ("ServiceUnavailable", 400, F.SERVER),
        ("AccessDenied", 403, F.ACCESS_DENIED),
        ("InvalidGroup.InUse", 400, F.IN_USE),
        ("ConditionalRequestConflict", 409, F.CONFLICT),
        ("InstanceRefreshInProgress", 400, F.CONFLICT),
        ("InvalidParameterValue", 400, F.OTHER),
        ("", None, F.OTHER),
    ],
)
def test_awss_other_spellings(code, status, family):
    assert error_family(code, status) is family
