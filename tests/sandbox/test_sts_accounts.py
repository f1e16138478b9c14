"""Several accounts in one sandbox (sandbox/aws/sts.py): AssumeRole into a member account's role
gives credentials that land in that account's backends; a role that does not exist or does not
trust the caller is refused with AWS's AccessDenied."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.sandbox.conftest import NO_RETRY, code_of, no_retry_client

MEMBER = "222222222222"
OTHER = "333333333333"


def _session_for(sandbox, role_arn: str) -> boto3.Session:
    creds = no_retry_client(sandbox, "sts").assume_role(RoleArn=role_arn, RoleSessionName="test")["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=sandbox.region,
    )


def test_assumed_role_lands_in_the_member_account(sandbox):
    role = sandbox.add_member_account(MEMBER)
    assert role == f"arn:aws:iam::{MEMBER}:role/ami-retention"
    member_image = sandbox.create_image("member-only", age_days=90, account_id=MEMBER)
    seeded_image = sandbox.create_image("seeded-only", age_days=90)

    session = _session_for(sandbox, role)
    sts = session.client("sts", endpoint_url=sandbox.endpoint_url, config=NO_RETRY)
    assert sts.get_caller_identity()["Account"] == MEMBER
    ec2 = session.client("ec2", endpoint_url=sandbox.endpoint_url, config=NO_RETRY)
    own = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert own == {member_image}  # not the seeded account's images
    seeded_own = {i["ImageId"] for i in no_retry_client(sandbox, "ec2").describe_images(Owners=["self"])["Images"]}
    assert seeded_image in seeded_own and member_image not in seeded_own


def test_a_missing_role_is_access_denied(sandbox):
    arn = f"arn:aws:iam::{OTHER}:role/ami-retention"
    sts = no_retry_client(sandbox, "sts")
    with pytest.raises(ClientError) as err:
        sts.assume_role(RoleArn=arn, RoleSessionName="test")
    error = err.value.response["Error"]
    assert error["Code"] == "AccessDenied"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Message"].endswith(f"is not authorized to perform: sts:AssumeRole on resource: {arn}")


def test_a_role_that_does_not_trust_the_caller_is_access_denied(sandbox):
    role = sandbox.add_member_account(OTHER, trusted_account="444444444444")
    assert code_of(lambda: no_retry_client(sandbox, "sts").assume_role(RoleArn=role, RoleSessionName="test")) == (
        "AccessDenied"
    )


def test_the_seeded_app_roles_can_still_be_assumed(sandbox):
    arn = sandbox.account["app_roles"]["demo-web"]
    creds = no_retry_client(sandbox, "sts").assume_role(
        RoleArn=arn, RoleSessionName="test", Tags=[{"Key": "App", "Value": "demo-web"}]
    )["Credentials"]
    assert creds["AccessKeyId"]


def test_member_accounts_through_the_control_surface(sandbox):
    """Another process (the Celery shape's workers) seeds accounts over HTTP: POST /_sandbox/accounts."""
    import json
    import urllib.request

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(
            f"{sandbox.endpoint_url}/_sandbox/{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    made = post("accounts", {"account_id": MEMBER})
    assert made == {"account_id": MEMBER, "role_arn": f"arn:aws:iam::{MEMBER}:role/ami-retention"}
    image = post("images", {"name": "remote", "age_days": 70, "account_id": MEMBER, "region": "us-west-2"})["image_id"]
    session = _session_for(sandbox, made["role_arn"])
    ec2 = session.client("ec2", region_name="us-west-2", endpoint_url=sandbox.endpoint_url, config=NO_RETRY)
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]] == [image]
