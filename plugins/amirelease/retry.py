"""When AWS pushes back: one retry policy for every AWS client the product makes, and one
mapping of AWS's throttling and server errors to an error in words.

The policy is a deployment setting, declared once in ``[ami_release]``:

* ``aws_retry_mode`` (default ``standard``) and ``aws_max_attempts`` (default 10, the first
  try included, as AWS's SDKs count ``AWS_MAX_ATTEMPTS``). Every client gets them: the Amazon
  provider's hooks our operators use (their botocore ``retries``, merged into the Airflow
  connection's own ``config_kwargs``), our own clients (aws.py), the retention run, the
  instance-refresh trigger, Terraform's AWS provider (``max_retries`` and ``retry_mode`` in
  the generated provider override, counted as attempts in all as measured; ``AWS_MAX_ATTEMPTS``/
  ``AWS_RETRY_MODE`` for its S3 backend) and Packer's amazon builder (``max_retries`` through
  ``PKR_VAR_aws_max_retries``).
* ``aws_poll_delay_seconds`` (15) and ``aws_wait_minutes`` (60): how Packer waits for AWS
  (the AMI to be available, the builder to stop): ``AWS_POLL_DELAY_SECONDS`` and
  ``AWS_MAX_ATTEMPTS`` in Packer's environment, which Packer's amazon plugin reads as its
  waiters' delay and number of polls (not as API retries).
* ``aws_step_retries`` (3) and ``aws_step_retry_delay_seconds`` (30): how often a release
  step that is safe to repeat is tried again, with exponential backoff, when AWS still
  refuses after every client retry; any other failure fails the step at once.

**Why standard mode.** Standard mode retries throttling (``RequestLimitExceeded``,
``Throttling``, ``ThrottlingException``, …), transient errors and 5xx with exponential
backoff and full jitter (capped at 20 s per wait), and keeps a retry quota per client so an
outage is not multiplied by retries. Adaptive mode adds a client-side rate limiter that only
learns once a client has been throttled and lives in that client object; the release's
clients live for one task and one region, so what it learns dies with the task, and AWS
documents adaptive mode as experimental. Adaptive stays available as a setting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from botocore.config import Config
from botocore.exceptions import ClientError

from amirelease.errors import (  # AWS's error codes are read and grouped in errors.py
    AwsErrorFamily,
    AwsPushbackError,
    ConfigError,
    aws_error,
    aws_error_family,
    error_family,
)

MODES = ("standard", "adaptive")
DEFAULT_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_POLL_DELAY = 15
DEFAULT_WAIT_MINUTES = 60
DEFAULT_STEP_RETRIES = 3
DEFAULT_STEP_RETRY_DELAY = 30
MAX_STEP_RETRY_DELAY = timedelta(minutes=10)


def _int_setting(key: str, default: int, low: int, high: int) -> int:
    from airflow.sdk.configuration import conf

    raw = str(conf.get("ami_release", key, fallback="") or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(
            f"[ami_release] {key} = {raw!r} is not a whole number from {low} to {high}",
            fix=f"set it to a number from {low} to {high}, or remove it for the default {default}",
        )
    return value


@dataclass(frozen=True)
class AwsRetryPolicy:
    """The deployment's one retry policy (see the module's docstring)."""

    mode: str = DEFAULT_MODE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    poll_delay_seconds: int = DEFAULT_POLL_DELAY
    wait_minutes: int = DEFAULT_WAIT_MINUTES
    step_retries: int = DEFAULT_STEP_RETRIES
    step_retry_delay_seconds: int = DEFAULT_STEP_RETRY_DELAY

    @classmethod
    def from_conf(cls) -> AwsRetryPolicy:
        from airflow.sdk.configuration import conf

        mode = str(conf.get("ami_release", "aws_retry_mode", fallback="") or "").strip() or DEFAULT_MODE
        if mode not in MODES:
            raise ConfigError(
                f"[ami_release] aws_retry_mode = {mode!r} is not a retry mode this product uses",
                fix="set it to standard (the default) or adaptive; legacy retries too few errors",
            )
        return cls(
            mode=mode,
            max_attempts=_int_setting("aws_max_attempts", DEFAULT_MAX_ATTEMPTS, 1, 50),
            poll_delay_seconds=_int_setting("aws_poll_delay_seconds", DEFAULT_POLL_DELAY, 1, 600),
            wait_minutes=_int_setting("aws_wait_minutes", DEFAULT_WAIT_MINUTES, 1, 24 * 60),
            step_retries=_int_setting("aws_step_retries", DEFAULT_STEP_RETRIES, 0, 10),
            step_retry_delay_seconds=_int_setting("aws_step_retry_delay_seconds", DEFAULT_STEP_RETRY_DELAY, 1, 3600),
        )

    # -- botocore (the provider's hooks, our clients) ------------------------------------------
    def botocore_retries(self) -> dict[str, Any]:
        return {"mode": self.mode, "total_max_attempts": self.max_attempts}

    def botocore_config(self, explicit: dict[str, Any] | None = None) -> dict[str, Any]:
        """An operator's ``botocore_config`` with the policy's retries (its own ``retries`` win)."""
        merged = dict(explicit or {})
        merged.setdefault("retries", self.botocore_retries())
        return merged

    def merge_config(self, config: Config | dict[str, Any] | None) -> Config:
        """A resolved botocore Config (the hook's or the connection's ``config_kwargs``) with
        the policy's retries, unless that config sets ``retries`` itself."""
        resolved: Config | None = Config(**config) if isinstance(config, dict) else config
        if resolved is None:
            return Config(retries=self.botocore_retries())
        if getattr(resolved, "retries", None):
            return resolved
        return resolved.merge(Config(retries=self.botocore_retries()))

    # -- the tools -------------------------------------------------------------------------------
    def packer_environment(self) -> dict[str, str]:
        """Packer's amazon builder: API retries (``max_retries``: retries after the first try,
        AWS SDK for Go v1) through the template variable; its waiters' delay and polls."""
        return {
            "PKR_VAR_aws_max_retries": str(max(self.max_attempts - 1, 0)),
            "AWS_POLL_DELAY_SECONDS": str(self.poll_delay_seconds),
            "AWS_MAX_ATTEMPTS": str(max(1, math.ceil(self.wait_minutes * 60 / self.poll_delay_seconds))),
        }

    def terraform_environment(self) -> dict[str, str]:
        """Terraform's environment, for its S3 state backend (AWS SDK for Go v2 reads these). The
        AWS provider does not take its attempts from here (measured: it keeps its own default of
        25 unless its block sets max_retries): that is the override's job."""
        return {"AWS_MAX_ATTEMPTS": str(self.max_attempts), "AWS_RETRY_MODE": self.mode}

    def terraform_provider_settings(self) -> dict[str, str]:
        """Arguments of the AWS provider block (HCL values), for the generated override."""
        return {"max_retries": str(self.max_attempts), "retry_mode": f'"{self.mode}"'}

    # -- release steps that are safe to repeat ---------------------------------------------------
    def step_retry_args(self) -> dict[str, Any]:
        """Task arguments for a step that is safe to repeat: retried with exponential backoff
        only when AWS pushed back (AwsPushbackError); any other failure fails it at once."""
        from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

        return {
            "retries": self.step_retries,
            "retry_delay": timedelta(seconds=self.step_retry_delay_seconds),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": MAX_STEP_RETRY_DELAY,
            "retry_policy": ExceptionRetryPolicy(
                rules=[
                    RetryRule(
                        exception=AwsPushbackError,
                        action=RetryAction.RETRY,
                        reason="AWS is throttling or erring: the step is safe to repeat",
                    )
                ],
                default=RetryAction.FAIL,
            ),
        }


def policy() -> AwsRetryPolicy:
    return AwsRetryPolicy.from_conf()


# -- the mapping: an AWS refusal in words ------------------------------------------------------


def pushback_kind(exc: BaseException) -> str | None:
    """'throttling', 'erring' (a 5xx or a server error code) or None (any other error)."""
    if not isinstance(exc, ClientError):
        return None
    family = aws_error_family(exc)
    if family is AwsErrorFamily.THROTTLED:
        return "throttling"
    if family is AwsErrorFamily.SERVER:
        return "erring"
    return None


def region_of(exc: ClientError) -> str | None:
    region = exc.response.get("ResponseMetadata", {}).get("Region")
    return str(region) if region else None


ClientT = TypeVar("ClientT")


def note_region(client: ClientT) -> ClientT:
    """Have ``client``'s error responses name its region (ClientError does not), for
    :func:`pushback_error`. Returns the client."""
    meta = getattr(client, "meta", None)
    events = getattr(meta, "events", None)
    region = getattr(meta, "region_name", None)
    if events is None or not region:
        return client

    def _note(parsed: Any = None, **_: Any) -> None:
        if isinstance(parsed, dict) and "Error" in parsed:
            parsed.setdefault("ResponseMetadata", {})["Region"] = region

    events.register("after-call", _note, unique_id="amirelease-note-region")
    return client


def pushback_error(
    exc: ClientError, *, step: str, region: str | None = None, changed: str, attempts: int | None = None
) -> AwsPushbackError | None:
    """The error in words for AWS throttling or erring (None for any other error)."""
    kind = pushback_kind(exc)
    if kind is None:
        return None
    code = aws_error(exc).code
    operation = exc.operation_name or "an AWS call"
    where = region_of(exc) or region or "the connection's region"
    return _pushback_words(kind, operation, code, where, step, attempts or policy().max_attempts, changed)


# How the AWS SDK for Go v2 (Terraform's AWS provider, Packer's amazon plugin) words a call that
# failed after its retries: "operation error EC2: DescribeSecurityGroups, exceeded maximum number
# of attempts, 10, https response error StatusCode: 503, RequestID: …, api error RequestLimitExceeded: …"
_GO_SDK_ERROR = re.compile(
    r"operation error (?P<service>[^:,]+): (?P<operation>\w+),(?P<middle>.*?)api error (?P<code>\w+):", re.S
)
_GO_SDK_ATTEMPTS = re.compile(r"exceeded maximum number of attempts, (\d+)")
_GO_SDK_STATUS = re.compile(r"StatusCode: (\d+)")


def tool_pushback_error(text: str, *, tool: str, step: str, region: str, changed: str) -> AwsPushbackError | None:
    """The same words for an AWS call that a tool (Terraform, Packer) gave up on after its own
    retries (the policy's attempts: retry.py gives them max_retries), read from the tool's error
    text; None when the text is not AWS throttling or erring."""
    for match in _GO_SDK_ERROR.finditer(text):
        code = match["code"]
        status = _GO_SDK_STATUS.search(match["middle"])
        family = error_family(code, int(status[1]) if status is not None else None)
        if family is AwsErrorFamily.THROTTLED:
            kind = "throttling"
        elif family is AwsErrorFamily.SERVER:
            kind = "erring"
        else:
            continue
        attempts = _GO_SDK_ATTEMPTS.search(match["middle"])
        tries = int(attempts[1]) if attempts else policy().max_attempts
        operation = f"{match['operation']} (called by {tool})"
        return _pushback_words(kind, operation, code, region, step, tries, changed)
    return None


def _pushback_words(
    kind: str, operation: str, code: str, where: str, step: str, tries: int, changed: str
) -> AwsPushbackError:
    if kind == "throttling":
        problem = (
            f"AWS is throttling this account: {operation} in {where} was refused ({code}) in step '{step}', "
            f"after {tries} attempts with backoff"
        )
        fix = (
            "wait a few minutes and trigger the release again (a step that is safe to repeat is retried by "
            "itself first); if it keeps happening, look for another heavy caller of the EC2 API in this account "
            "and region (a retention run, Cloud Custodian, scripts, consoles) or ask AWS for a higher API rate "
            "limit; [ami_release] aws_max_attempts sets how long every client rides it out"
        )
    else:
        problem = (
            f"AWS is erring: {operation} in {where} failed on AWS's side ({code}) in step '{step}', "
            f"after {tries} attempts with backoff"
        )
        fix = "wait and trigger the release again; check the AWS Health Dashboard for this region if it persists"
    return AwsPushbackError(
        f"{problem}. {changed}",
        resource=f"{operation} in {where}",
        fix=fix,
        operation=operation,
        region=where,
        kind=kind,
        code=code,
        step=step,
    )
