"""The one way this package builds AWS clients: the Amazon provider's hooks, with one
Airflow connection, in any region.

EC2 through ``EC2Hook`` (as a client), Auto Scaling through our ``AutoScalingHook`` (the
provider has none), S3 through ``S3Hook``, SSM through ``SsmHook``; ELBv2 and CloudWatch,
which have no provider hook, through the provider's generic ``AwsGenericHook["<Client>"]`` (typed
by the mypy-boto3 stubs, imported for the type checker only). Operators,
the CLI and the UI plugin all go through :class:`AwsClients`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook, AwsGenericHook
from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.hooks.ssm import SsmHook
from botocore.config import Config
from botocore.exceptions import ClientError

from amirelease.constants import DEFAULT_AWS_CONN_ID
from amirelease.errors import PreflightError, aws_error_code
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.hooks.ec2_release import Ec2ReleaseHook
from amirelease.retry import note_region, policy

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_rbin import RecycleBinClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient  # noqa: F401 (named as a string: AwsGenericHook["STSClient"])
    from mypy_boto3_sts.type_defs import CredentialsTypeDef

HookT = TypeVar("HookT", bound=AwsGenericHook[Any])
ClientT = TypeVar("ClientT")


def with_retry_policy(hook: HookT) -> HookT:
    """The deployment's retry policy (retry.py) on a provider hook, before its client is made:
    merged into the hook's resolved botocore config (an explicit ``config`` or the Airflow
    connection's ``config_kwargs``), unless that config sets ``retries`` itself."""
    wrapper = hook.conn_config
    wrapper.botocore_config = policy().merge_config(wrapper.botocore_config)
    return hook


def retry_config(aws_conn_id: str | None, botocore_config: dict[str, Any] | None) -> Config:
    """The botocore config a hook of this connection resolves to (an explicit one, else the
    connection's ``config_kwargs``) with the deployment's retry policy merged in."""
    resolved = AwsBaseHook(aws_conn_id=aws_conn_id, config=botocore_config, client_type="sts").conn_config
    return policy().merge_config(resolved.botocore_config)


def client_of(hook: AwsGenericHook[ClientT]) -> ClientT:
    """The hook's boto3 client (its retry policy applied), naming its region in its errors.
    Typed as the hook's: ``AwsGenericHook["EC2Client"]`` gives an ``EC2Client``."""
    conn = with_retry_policy(hook).conn
    note_region(getattr(getattr(conn, "meta", None), "client", None) or conn)  # a boto3 resource has .meta.client
    return conn


@dataclass(frozen=True)
class AwsClients:
    """Clients for one Airflow AWS connection; ``region=None`` means the connection's region."""

    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID
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

    def ec2(self, region: str | None = None) -> EC2Client:
        # The provider's EC2Hook is untyped (a client or a resource: Any); built as a client.
        client: EC2Client = client_of(EC2Hook(api_type="client_type", **self._kwargs(region)))
        return client

    def ec2_release(self, region: str | None = None) -> Ec2ReleaseHook:
        """The release's EC2 work (hooks/ec2_release.py), a client hook like ``ec2``."""
        hook = Ec2ReleaseHook(**self._kwargs(region))
        client_of(hook)
        return hook

    def autoscaling(self, region: str | None = None) -> AutoScalingHook:
        hook = AutoScalingHook(**self._kwargs(region))
        client_of(hook)
        return hook

    def s3(self) -> S3Client:
        client: S3Client = client_of(S3Hook(**self._kwargs(None)))  # S3Hook is untyped (Any)
        return client

    def ssm(self, region: str | None = None) -> SSMClient:
        client: SSMClient = client_of(SsmHook(**self._kwargs(region)))  # SsmHook is untyped (Any)
        return client

    def rbin(self, region: str | None = None) -> RecycleBinClient:
        """The Recycle Bin (retention rules)."""
        return AwsGenericHook["RecycleBinClient"](client_type="rbin", **self._kwargs(region)).conn

    def elbv2(self, region: str | None = None) -> ElasticLoadBalancingv2Client:
        return client_of(AwsGenericHook["ElasticLoadBalancingv2Client"](client_type="elbv2", **self._kwargs(region)))

    def cloudwatch(self, region: str | None = None) -> CloudWatchClient:
        return client_of(AwsGenericHook["CloudWatchClient"](client_type="cloudwatch", **self._kwargs(region)))

    def base_hook(self, region: str | None = None) -> AwsBaseHook:
        """For credentials, the account id and the connection's endpoint settings."""
        return with_retry_policy(AwsBaseHook(client_type="sts", **self._kwargs(region)))


APP_TAG = "App"  # the session tag an app role's policy conditions on (cli iam-policy --app)
ASSUME_SECONDS = 3600


def session_name(app: str, release_id: str) -> str:
    r"""RoleSessionName (CloudTrail shows it): 2-64 of [\w+=,.@-]."""
    return re.sub(r"[^\w+=,.@-]", "-", f"ami-release-{release_id or app}")[:64]


def assume_app_role(
    hook: AwsGenericHook[Any], region: str, role_arn: str, app: str, release_id: str
) -> CredentialsTypeDef:
    """Credentials of the app's role for one release (session tag App=<app>, transitive)."""
    sts = client_of(
        AwsGenericHook["STSClient"](
            aws_conn_id=hook.aws_conn_id, region_name=region, client_type="sts", config=hook.config, verify=hook.verify
        )
    )
    try:
        creds = sts.assume_role(
            RoleArn=role_arn,
            RoleSessionName=session_name(app, release_id),
            DurationSeconds=ASSUME_SECONDS,
            Tags=[{"Key": APP_TAG, "Value": app}],
            TransitiveTagKeys=[APP_TAG],
        )["Credentials"]
    except ClientError as exc:
        code = aws_error_code(exc)
        raise PreflightError(
            f"the workers' AWS role may not assume {app}'s role {role_arn} ({code})",
            fix="let the workers' role assume it: the app role's trust policy must allow sts:AssumeRole and "
            "sts:TagSession for the workers' role (python -m amirelease.cli iam-policy --app " + app + ")",
        ) from None
    return creds


def tool_environment(
    hook: AwsGenericHook[Any], region: str, *, role_arn: str = "", app: str = "", release_id: str = ""
) -> dict[str, str]:
    """Credentials for a tool run as a subprocess (Packer, Terraform): the app role's for this
    release when the app has one, else the connection's; in its environment, where the AWS SDKs
    read them, never in argv."""
    if role_arn:
        c = assume_app_role(hook, region, role_arn, app, release_id)
        access, secret, token = c["AccessKeyId"], c["SecretAccessKey"], c.get("SessionToken")
    else:
        creds = hook.get_credentials(region_name=region)
        access, secret, token = creds.access_key, creds.secret_key, creds.token
    env = {
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    if token:
        env["AWS_SESSION_TOKEN"] = token
    return env
