"""Typed errors. Each says what failed, on which resource, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow.sdk.exceptions import AirflowException
from botocore.exceptions import ClientError, WaiterError


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


# -- AWS's error codes, read in one place ----------------------------------------------------
#
# The one reader of a botocore error's code (hvac's ``utils.raise_for_error`` is the model: one
# function turns a response into a kind of error). Every module asks ``aws_error(exc)`` instead of
# indexing ``exc.response["Error"]["Code"]`` (tests/unit/test_one_definition.py fails on a copy);
# ``family`` groups AWS's many spellings of the same answer, so a site says what it means
# ("the object is not there") rather than listing codes it may have missed.


class AwsErrorFamily(StrEnum):
    NOT_FOUND = "not-found"  # what the call named does not exist (or no longer: a deregistered AMI)
    NO_BUCKET = "no-bucket"  # the S3 bucket itself is missing: a deployment setting, not an absent object
    THROTTLED = "throttled"  # AWS's request rate limits (retry.py retries and words them)
    SERVER = "server"  # AWS failed on its side (5xx)
    ACCESS_DENIED = "access-denied"  # IAM (or an SCP, a bucket policy) refused the call
    DRY_RUN_OK = "dry-run-ok"  # DryRun=True and the call would have succeeded
    IN_USE = "in-use"  # something still depends on it (a group an instance uses); try again later
    CONFLICT = "conflict"  # a condition of the call no longer holds (If-None-Match, a refresh in progress)
    UNSUPPORTED = "unsupported"  # this endpoint does not serve the call (a partition, a sandbox)
    OTHER = "other"


# AWS's throttling codes (botocore's standard-mode list, retryhandler.py, and EC2's "Request
# throttling" page) and its server-error codes; 5xx is decided by the HTTP status as well.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
SERVER_ERROR_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# EC2 spells "not found" as <Resource>.NotFound (InvalidAMIID.NotFound, InvalidGroup.NotFound, ...)
# and a few as ...NotFoundException; S3 as NoSuchKey (GetObject) or a bare 404/NotFound (HEAD
# requests carry no body); IAM as NoSuchEntity. A deregistered AMI answers InvalidAMIID.Unavailable.
NOT_FOUND_CODES = frozenset(
    {"NoSuchKey", "404", "NotFound", "NoSuchEntity", "ResourceNotFoundException", "InvalidAMIID.Unavailable"}
)
NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "403"})
DRY_RUN_OK_CODES = frozenset({"DryRunOperation"})
IN_USE_CODES = frozenset({"DependencyViolation", "InvalidGroup.InUse", "ResourceInUse", "ResourceInUseException"})
# (S3's OperationAborted is left out: the release lock treats a conflict as "held by another run")
CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "InstanceRefreshInProgress"})
UNSUPPORTED_CODES = frozenset({"InvalidAction", "UnsupportedOperation", "NotImplemented", "UnknownOperationException"})

_FAMILIES = (
    (AwsErrorFamily.DRY_RUN_OK, DRY_RUN_OK_CODES),
    (AwsErrorFamily.THROTTLED, THROTTLING_CODES),
    (AwsErrorFamily.SERVER, SERVER_ERROR_CODES),
    (AwsErrorFamily.NOT_FOUND, NOT_FOUND_CODES),
    (AwsErrorFamily.NO_BUCKET, NO_BUCKET_CODES),
    (AwsErrorFamily.ACCESS_DENIED, ACCESS_DENIED_CODES),
    (AwsErrorFamily.IN_USE, IN_USE_CODES),
    (AwsErrorFamily.CONFLICT, CONFLICT_CODES),
    (AwsErrorFamily.UNSUPPORTED, UNSUPPORTED_CODES),
)


def error_family(code: str, status: int | None = None) -> AwsErrorFamily:
    """The family of one AWS error code and HTTP status (a 5xx that is not throttling is SERVER,
    whatever its code: AWS failed on its side)."""
    if code in THROTTLING_CODES:
        return AwsErrorFamily.THROTTLED
    if isinstance(status, int) and status >= 500:
        return AwsErrorFamily.SERVER
    for family, codes in _FAMILIES:
        if code in codes:
            return family
    if code.endswith((".NotFound", "NotFoundException")):
        return AwsErrorFamily.NOT_FOUND
    return AwsErrorFamily.OTHER


@dataclass(frozen=True)
class AwsError:
    """What AWS answered, read once: its code, message, HTTP status, the call, and the family."""

    code: str
    message: str
    status: int | None
    operation: str
    family: AwsErrorFamily

    def __str__(self) -> str:
        return f"{self.code or 'error'}: {self.message}".strip(": ")


def aws_error(exc: ClientError | WaiterError) -> AwsError:
    """The one reader of a botocore ``ClientError`` (or a ``WaiterError``'s last answer)."""
    response: Any = exc.response if isinstance(exc, ClientError) else exc.last_response
    response = response if isinstance(response, dict) else {}
    error = response.get("Error") or {}
    code = str(error.get("Code", "") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    status = status if isinstance(status, int) else None
    operation = str(getattr(exc, "operation_name", "") or "")
    return AwsError(
        code=code,
        message=str(error.get("Message", "") or ""),
        status=status,
        operation=operation,
        family=error_family(code, status),
    )


def aws_error_code(exc: ClientError | WaiterError) -> str:
    """AWS's error code of ``exc`` ('' when the answer had none)."""
    return aws_error(exc).code


def aws_error_family(exc: BaseException) -> AwsErrorFamily | None:
    """The family of an AWS error; None for anything that is not an AWS answer."""
    if isinstance(exc, ClientError | WaiterError):
        return aws_error(exc).family
    return None
