"""Retention in one account x region of an AWS Organization (the policy's ``accounts:``).

:class:`AccountRetentionOperator` is the region operator (:class:`AmiRetentionOperator`) with
its AWS clients taken from one account:

* ``role_arn``: the workers' connection (``aws_conn_id``, normally ``aws_default``) with the
  role set on it, so the Amazon provider's own assume-role machinery (``AwsBaseHook`` /
  ``SessionFactory``: refreshable credentials, STS endpoint of the connection) makes the session;
* ``aws_conn_id``: that Airflow connection, as it is.

**One client set per task, by construction.** The account is one immutable value of the mapped
task; the EC2, Auto Scaling and Recycle Bin clients that list, decide on and change images are
all made from the single boto3 session built for it (one AssumeRole per task), and before any
listing the session's identity (``sts:GetCallerIdentity``) must be the account the role ARN
names. The only other client is the workers' own S3 client, which writes the reports to the
ledger bucket and reads nothing that a decision uses. A task cannot read account A's groups
while deregistering in B: it holds no client of any other account.

Without ``account`` the operator is exactly :class:`AmiRetentionOperator` (the single-account
behaviour).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

from amirelease.errors import ConfigError, RetentionError, aws_error
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.operators.retention import AmiRetentionOperator
from amirelease.retention.iam_actions import IAM_ACTIONS as RETENTION_AWS_IAM_ACTIONS

if TYPE_CHECKING:
    import boto3
    from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
    from airflow.sdk import Context
    from mypy_boto3_rbin import RecycleBinClient

SESSION_NAME = "ami-retention"

# IAM (iam.py): the retention worker's role may assume the accounts' roles; each account's role
# may do what the region task does there, except S3 (the reports go to the ledger bucket with the
# worker's own role). Its trust policy must let the worker's account (or role) assume it.
ASSUME_IAM_ACTIONS: tuple[str, ...] = ("sts:AssumeRole",)
ACCOUNT_ROLE_IAM_ACTIONS: tuple[str, ...] = tuple(
    a for a in (*AmiRetentionOperator.iam_actions, *RETENTION_AWS_IAM_ACTIONS) if not a.startswith("s3:")
)


class _OneAccountSession:
    """The hooks' shared boto3 session for one account (made once, on first use)."""

    def __init__(self) -> None:
        self.session: boto3.session.Session | None = None


class _AccountHookMixin:
    """A provider hook whose connection is the account's (``account_role_arn`` set on the
    connection it is given) and whose sessions are the task's one session (``account_session``).
    Without both it is the provider's hook unchanged."""

    def __init__(
        self,
        *args: Any,
        account_role_arn: str | None = None,
        account_session: _OneAccountSession | None = None,
        **kwargs: Any,
    ) -> None:
        self._role_arn = account_role_arn
        self._shared = account_session
        super().__init__(*args, **kwargs)

    @cached_property
    def conn_config(self) -> AwsConnectionWrapper:
        from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper

        base: AwsConnectionWrapper = super().conn_config  # type: ignore[misc]
        if not self._role_arn:
            return base
        wrapper = AwsConnectionWrapper(
            conn=base, region_name=base.region_name, botocore_config=base.botocore_config, verify=base.verify
        )
        wrapper.role_arn = self._role_arn
        wrapper.assume_role_method = "assume_role"
        wrapper.assume_role_kwargs = {"RoleSessionName": SESSION_NAME}
        return wrapper

    def get_session(self, region_name: str | None = None, deferrable: bool = False) -> Any:
        if self._shared is None or deferrable:
            return super().get_session(region_name=region_name, deferrable=deferrable)  # type: ignore[misc]
        if self._shared.session is None:
            self._shared.session = super().get_session(region_name=region_name)  # type: ignore[misc]
        return self._shared.session


class AccountEC2Hook(_AccountHookMixin, EC2Hook):
    pass


class AccountAutoScalingHook(_AccountHookMixin, AutoScalingHook):
    pass


class AccountAwsHook(_AccountHookMixin, AwsBaseHook):
    pass


def _account(value: Any) -> dict[str, str] | None:
    """The task's account (the policy's ``as_task_arg``), checked: a name and one way in."""
    if value in (None, "", {}):
        return None
    if not isinstance(value, Mapping) or not value.get("name"):
        raise ConfigError(
            f"the retention task's account must be a mapping with a name, got {value!r}",
            resource="task argument account",
            fix="let the DAG pass the policy's accounts (retention_pipeline.py); name accounts in the policy",
        )
    if bool(value.get("role_arn")) == bool(value.get("aws_conn_id")):
        raise ConfigError(
            f"account {value['name']!r} must name exactly one of role_arn or aws_conn_id",
            resource=f"account {value['name']}",
            fix="give the account either role_arn (assumed from aws_default) or aws_conn_id in the policy",
        )
    return {k: str(v) for k, v in value.items() if v}


class AccountRetentionOperator(AmiRetentionOperator):
    """
    Apply the AMI retention policy to one region of one account (see the module docstring).

    :param account: ``{"name": ..., "role_arn": ...}`` or ``{"name": ..., "aws_conn_id": ...}``
        (the policy's ``accounts`` entry); None: the workers' own account, as
        :class:`AmiRetentionOperator`.
    """

    aws_hook_class = AccountEC2Hook  # the provider's EC2Hook, with the account's connection and session
    template_fields: Sequence[str] = (*AmiRetentionOperator.template_fields, "account")

    def __init__(self, *, account: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.account = account

    @cached_property
    def _acct(self) -> dict[str, str] | None:
        return _account(self.account)

    @cached_property
    def _shared(self) -> _OneAccountSession:
        return _OneAccountSession()

    @property
    def _account_hook_parameters(self) -> dict[str, Any]:
        acct = self._acct
        if acct is None:
            return {}
        return {
            "aws_conn_id": acct.get("aws_conn_id") or self.aws_conn_id,
            "account_role_arn": acct.get("role_arn"),
            "account_session": self._shared,
        }

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        # the provider's way to shape `self.hook` (its `hook` is final): the account's EC2 client
        return {**super()._hook_parameters, **self._account_hook_parameters}

    def _make(self, cls: type[Any], **kwargs: Any) -> Any:
        params = {
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
            "config": self.botocore_config,
            **kwargs,
            **self._account_hook_parameters,
        }
        return cls(**params)

    @cached_property
    def autoscaling_hook(self) -> AutoScalingHook:
        if self._acct is None:
            return super().autoscaling_hook
        hook: AutoScalingHook = self._make(AccountAutoScalingHook)
        return hook

    @cached_property
    def rbin_client(self) -> RecycleBinClient:
        if self._acct is None:
            return super().rbin_client
        client: RecycleBinClient = self._make(AccountAwsHook, client_type="rbin").conn  # an AwsBaseHook: Any
        return client

    # s3_hook (reports to the ledger bucket) stays the region operator's: the workers' own
    # connection (self.aws_conn_id), never the account's.

    def _identity(self, acct: Mapping[str, str]) -> str:
        """Make the account's session and return its account id; fail in words when the way in
        does not work or lands in another account than the role ARN names."""
        from botocore.exceptions import BotoCoreError, ClientError

        way = f"role {acct['role_arn']}" if acct.get("role_arn") else f"connection {acct['aws_conn_id']}"
        where = f"account {acct['name']} ({way}), region {self.region_name}"
        try:
            found = str(self.hook.account_id)
        except ClientError as exc:
            error = aws_error(exc)
            fix = (
                "create the role in that account with the retention permissions "
                "(`amirelease.cli iam-policy --role retention-account`) and a trust policy that lets the "
                "workers' role assume it (sts:AssumeRole; docs/retention.md, Several accounts), or correct "
                "role_arn in the policy"
                if acct.get("role_arn")
                else "check the connection's credentials and permissions, or correct aws_conn_id in the policy"
            )
            raise RetentionError(
                f"cannot act in account {acct['name']}: {error.code or 'error'}: {error.message or exc}"
                " (nothing was read or changed in this account)",
                resource=where,
                fix=fix,
            ) from exc
        except (BotoCoreError, ValueError) as exc:
            raise RetentionError(
                f"cannot act in account {acct['name']}: {exc} (nothing was read or changed in this account)",
                resource=where,
                fix="check the connection named in the policy (its credentials, region and endpoint)",
            ) from exc
        expected = acct["role_arn"].split(":")[4] if acct.get("role_arn") else None
        if expected and found != expected:
            raise RetentionError(
                f"assuming {acct['role_arn']} gave credentials of account {found}, not {expected}: "
                "nothing was read or changed",
                resource=where,
                fix="check the role ARN and the connection aws_default (its role_arn extra must not be set)",
            )
        return found

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease.ledger import ledger_bucket
        from amirelease.retention.policy import load_policy
        from amirelease.retention.report import account_scope

        acct = self._acct
        if acct is None:
            return super().execute(context)
        load_policy(self.policy_path)  # bad input fails before any AWS call, as in the region task
        ledger_bucket()
        account_id = self._identity(acct)
        self.log.info("Account %s (%s), region %s", acct["name"], account_id, self.region_name)
        with account_scope(acct["name"], account_id):
            return super().execute(context)
