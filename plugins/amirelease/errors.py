"""Typed errors. Each says what failed, on which resource, and what to do about it."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


class ReleaseError(AirflowException):
    """Base class for every error this package raises on purpose."""

    def __init__(self, problem: str, *, resource: str | None = None, fix: str | None = None):
        self.problem = problem
        self.resource = resource
        self.fix = fix
        parts = [problem if resource is None else f"{problem} [{resource}]"]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class ConfigError(ReleaseError):
    """A catalog file, policy file or trigger parameter is invalid. Nothing was changed."""


class PreflightError(ReleaseError):
    """A check before any AWS change failed (missing ASG, secret, base image...). Nothing was changed."""


class BakeError(ReleaseError):
    """Packer failed or produced no AMI."""


class InfrastructureError(ReleaseError):
    """Terraform refused, failed, or would destroy what the catalog protects."""


class SmokeTestError(ReleaseError):
    """The smoke-test instance did not pass its checks."""


class RolloutError(ReleaseError):
    """Launch-template update or instance refresh failed."""


class VerificationError(ReleaseError):
    """The rolled-out groups do not satisfy the app's verification checks."""


class RetentionError(ReleaseError):
    """The retention run refused to act (policy invalid, safety cap exceeded...)."""


class AwsPushbackError(ReleaseError):
    """AWS throttled the account or erred (5xx) on a call, after every client retry. Built by
    amirelease.retry.pushback_error, which says which call, where, and what was changed."""

    def __init__(
        self,
        problem: str,
        *,
        resource: str | None = None,
        fix: str | None = None,
        operation: str = "",
        region: str = "",
        kind: str = "",
        code: str = "",
        step: str = "",
    ):
        super().__init__(problem, resource=resource, fix=fix)
        self.operation = operation
        self.region = region
        self.kind = kind
        self.code = code
        self.step = step
