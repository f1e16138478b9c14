"""Shared pieces of the release operators (Amazon-provider style)."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

from amirelease.hooks.autoscaling import AutoScalingHook


class RegionalHooksMixin:
    """Build hooks for other regions with the operator's connection settings.

    An app's groups may live in several regions; ``self.hook`` is the operator's own
    region, these give the same connection in another one.
    """

    aws_conn_id: str | None
    verify: Any
    botocore_config: dict | None

    def _common(self, region: str | None) -> dict[str, Any]:
        return {
            "aws_conn_id": self.aws_conn_id,
            "region_name": region,
            "verify": self.verify,
            "config": self.botocore_config,
        }

    def ec2(self, region: str | None = None):
        return EC2Hook(api_type="client_type", **self._common(region)).conn

    def autoscaling(self, region: str | None = None) -> AutoScalingHook:
        return AutoScalingHook(**self._common(region))


class Ec2ClientHookMixin:
    """For operators whose ``aws_hook_class`` is EC2Hook: build it as a client (the
    provider's EC2Hook defaults to a boto3 resource). List before AwsBaseOperator."""

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        return {**super()._hook_parameters, "api_type": "client_type"}  # type: ignore[misc]


def tags_dict(tags: list[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def group_launch_template(group: dict) -> dict | None:
    """The launch template spec a group uses (plain or in a mixed-instances policy)."""
    if group.get("LaunchTemplate"):
        return group["LaunchTemplate"]
    mip = group.get("MixedInstancesPolicy") or {}
    return (mip.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification")
