"""The one way this package builds AWS clients: the Amazon provider's hooks, with one
Airflow connection, in any region.

EC2 through ``EC2Hook`` (as a client), Auto Scaling through our ``AutoScalingHook`` (the
provider has none), S3 through ``S3Hook``, SSM through ``SsmHook``; ELBv2 and CloudWatch,
which have no provider hook, through the provider's generic ``AwsBaseHook``. Operators,
the CLI and the UI plugin all go through :class:`AwsClients`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.hooks.ssm import SsmHook

from amirelease.hooks.autoscaling import AutoScalingHook


@dataclass(frozen=True)
class AwsClients:
    """Clients for one Airflow AWS connection; ``region=None`` means the connection's region."""

    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    verify: bool | str | None = None
    botocore_config: dict[str, Any] | None = None

    def _kwargs(self, region: str | None) -> dict[str, Any]:
        return {
            "aws_conn_id": self.aws_conn_id,
            "region_name": region or self.region_name,
            "verify": self.verify,
            "config": self.botocore_config,
        }

    def ec2(self, region: str | None = None) -> Any:
        return EC2Hook(api_type="client_type", **self._kwargs(region)).conn

    def autoscaling(self, region: str | None = None) -> AutoScalingHook:
        return AutoScalingHook(**self._kwargs(region))

    def s3(self) -> Any:
        return S3Hook(**self._kwargs(None)).conn

    def ssm(self, region: str | None = None) -> Any:
        return SsmHook(**self._kwargs(region)).conn

    def elbv2(self, region: str | None = None) -> Any:
        return AwsBaseHook(client_type="elbv2", **self._kwargs(region)).conn

    def cloudwatch(self, region: str | None = None) -> Any:
        return AwsBaseHook(client_type="cloudwatch", **self._kwargs(region)).conn

    def base_hook(self, region: str | None = None) -> AwsBaseHook:
        """For credentials, the account id and the connection's endpoint settings."""
        return AwsBaseHook(client_type="sts", **self._kwargs(region))


def tool_environment(hook: AwsBaseHook, region: str) -> dict[str, str]:
    """The connection's credentials for a tool run as a subprocess (Packer, Terraform): in its
    environment, where the AWS SDKs read them, never in argv."""
    creds = hook.get_credentials(region_name=region)
    env = {
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    return env
