"""The sandbox's own tests use a fleet made straight through the API (the apps' fleets are
made by Terraform, tested in tests/release)."""

from __future__ import annotations

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

NO_RETRY = Config(retries={"total_max_attempts": 1})


def no_retry_client(sandbox, service: str):
    """A client of the sandbox that sees every error itself (no botocore retries)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=sandbox.endpoint_url,
        region_name=sandbox.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=NO_RETRY,
    )


def code_of(call) -> str:
    """The AWS error code a call answers with (it must fail)."""
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


@pytest.fixture
def ec2(sandbox):
    """An EC2 client of the reset sandbox, without retries."""
    return no_retry_client(sandbox, "ec2")


@pytest.fixture
def fleet(sandbox):
    """The reset sandbox plus a group 'demo-web-asg' (template demo-web, target group, alarms),
    its ids merged into ``sandbox.account``."""
    sandbox.account.update(sandbox.create_fleet("demo-web"))
    sandbox.reset_request_counts()
    return sandbox
