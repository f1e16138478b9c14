"""Retention shares the account's API budget: a retention run paces its own EC2 calls so that it
cannot starve a release in the same account and Region (issue 28).

AWS throttles EC2 per account and Region with a token bucket **per API action**, sized by the
action's category (EC2 Developer Guide, "Request throttling for the Amazon EC2 API": non-mutating
``Describe*`` 100 tokens refilled 20 a second; mutating 50 / 5; ``CreateTags``/``DeleteTags``
100 / 10; ``DeregisterImage``, ``DeleteSnapshot`` 100 / 5). Every caller in the account draws
from the same buckets: our releases, our retention run, Cloud Custodian, consoles.

The pacer is a client-side token bucket per action, in front of every HTTP attempt (retries
included) of the retention run's EC2 client:

* for the actions a release also makes (``SHARED``: ``DescribeImages``, ``DescribeInstances``,
  ``CreateTags``, ``DescribeLaunchTemplateVersions``, which Terraform's AWS provider reads, and
  ``DeregisterImage``/``DeleteSnapshot``, with which a release's record removes a refused AMI),
  retention takes at most ``[ami_release] retention_api_share`` (default **0.5**) of AWS's bucket
  and of its refill rate: at most 50 ``DescribeImages`` at once and 10 a second after that, so
  at least 10 a second stay for the release whatever the retention run does;
* the actions only retention makes (``EnableImageDeprecation``, ``DescribeImageReferences``, ...)
  are paced just under AWS's own rate (90 %):
  no release waits on them, and a run that went faster would only be throttled by AWS and spend
  its retry quota (botocore's standard mode stops retrying once the quota is gone: the run would
  fail).

``retention_api_share = off`` turns pacing off. Auto Scaling, S3 and the Recycle Bin are not
paced: AWS publishes no bucket sizes for them, and a run makes a handful of those calls.

What it costs (measured, docs/benchmarks.md): at 5,000 AMIs a steady run made ~650 calls, 366
of them ``DescribeLaunchTemplateVersions``, before the template cross-check asked only for what
the listing lacks (now ~65 a run); a first run that writes thousands of marks (one ``EnableImageDeprecation`` each:
3,334) runs at 4.5 a second (AWS allows 5) and took 891 s, 15 of the task's 20 minutes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

DEFAULT_SHARE = 0.5
# AWS's published buckets (size, refill per second) for the EC2 calls retention makes; any
# other action by its category (non-mutating 100 / 20, mutating 50 / 5).
AWS_BUCKETS: dict[str, tuple[float, float]] = {
    "CreateTags": (100, 10),
    "DeleteTags": (100, 10),
    "DeregisterImage": (100, 5),
    "DeleteSnapshot": (100, 5),
}
NON_MUTATING = (100.0, 20.0)
MUTATING = (50.0, 5.0)
# Retention's EC2 actions that a release makes too (the release's roles, iam.py; Terraform's
# provider reads launch template versions): here retention keeps to its share.
SHARED = frozenset(
    {
        "DescribeImages",
        "DescribeInstances",
        "CreateTags",
        "DescribeLaunchTemplateVersions",
        "DescribeLaunchTemplates",  # the template cross-check (aws.describe_templates); preflight reads it too
        # a release's record step deregisters the AMI of a release that a gate refused (and its
        # snapshots): rare, but the same buckets (tests/retention/test_retention_pacing.py reads
        # the release roles' IAM actions and fails on the next action both make)
        "DeregisterImage",
        "DeleteSnapshot",
    }
)
# The rest go at 90 % of AWS's rate: our clock and AWS's never agree exactly (measured in the
# sandbox at 100 %: one of 112 EnableImageDeprecation calls throttled, then retried).
OWN_SHARE = 0.9


def aws_bucket(action: str) -> tuple[float, float]:
    """AWS's (bucket size, refill per second) for an EC2 action."""
    if action in AWS_BUCKETS:
        return AWS_BUCKETS[action]
    return NON_MUTATING if action.startswith(("Describe", "List", "Get", "Search")) else MUTATING


class Pacer:
    """Client-side token buckets, one per EC2 action (thread-safe; the run's pool shares it).

    A call that finds its bucket empty reserves the next token and sleeps until it is due, so
    concurrent callers queue fairly and the rate is never exceeded."""

    def __init__(
        self,
        share: float = DEFAULT_SHARE,
        *,
        shared: frozenset[str] = SHARED,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be more than 0 and at most 1, got {share!r}")
        self.share = share
        self.shared = shared
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}  # action -> [tokens, at]
        self.calls: Counter[str] = Counter()
        self.waited: dict[str, float] = {}  # seconds slept per action
        self.started = clock()

    def limits(self, action: str) -> tuple[float, float]:
        """(burst, requests per second) this run allows itself for ``action``."""
        size, rate = aws_bucket(action)
        part = self.share if action in self.shared else OWN_SHARE
        return max(1.0, size * part), rate * part

    def acquire(self, action: str) -> float:
        """Take a token for one request of ``action``; sleeps until it is due. Seconds waited."""
        burst, rate = self.limits(action)
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(action, [burst, now])
            tokens = min(burst, tokens + (now - at) * rate) - 1
            self._buckets[action] = [tokens, now]
            wait = -tokens / rate if tokens < 0 else 0.0
            self.calls[action] += 1
            self.waited[action] = self.waited.get(action, 0.0) + wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def install(self, client: EC2Client) -> EC2Client:
        """Pace every HTTP attempt of an EC2 client (botocore's ``before-send`` event). Returns it."""
        client.meta.events.register("before-send.ec2", self._before_send, unique_id="amirelease-retention-pacing")
        return client

    def _before_send(self, event_name: str = "", **_: Any) -> None:
        self.acquire(event_name.rsplit(".", 1)[-1])
        return None  # anything else would stand in for AWS's answer

    def summary(self) -> dict[str, Any]:
        """Calls per action, how long they waited, calls per second over the run so far."""
        with self._lock:
            elapsed = max(self._clock() - self.started, 1e-9)
            total = sum(self.calls.values())
            return {
                "share": self.share,
                "calls": dict(sorted(self.calls.items())),
                "total": total,
                "waited_seconds": round(sum(self.waited.values()), 3),
                "per_second": round(total / elapsed, 2),
            }


def configured_share() -> float | None:
    """``[ami_release] retention_api_share``: the share (default 0.5), or None for ``off``."""
    from airflow.sdk.configuration import conf

    from amirelease.errors import ConfigError

    raw = str(conf.get("ami_release", "retention_api_share", fallback="") or "").strip().lower()
    if not raw:
        return DEFAULT_SHARE
    if raw in ("off", "none", "false"):
        return None
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ConfigError(
            f"[ami_release] retention_api_share = {raw!r} is not a share of AWS's API budget",
            resource="[ami_release] retention_api_share",
            fix="set a number above 0 and at most 1 (0.5, the default, leaves half of each EC2 bucket a release "
            "also uses to the release), or 'off' to let retention call as fast as it can",
        )
    return share


def pace_retention(context: Any) -> None:
    """The retention task's ``on_execute_callback``: pace its EC2 client before it runs."""
    task = context["task"]
    share = configured_share()
    if share is None:
        task.log.info("Retention's EC2 calls are not paced ([ami_release] retention_api_share = off)")
        return
    pacer = Pacer(share)
    pacer.install(task.hook.conn)
    task.retention_pacer = pacer
    task.log.info(
        "Pacing retention's EC2 calls: %.0f %% of AWS's bucket for the calls a release also makes "
        "(e.g. DescribeImages: %g at once, %g a second), AWS's own rate for the rest",
        share * 100,
        *pacer.limits("DescribeImages"),
    )
