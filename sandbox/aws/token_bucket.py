"""EC2's request throttling, as AWS documents it: a token bucket per API action, per account and
Region, sized by the action's category ("Request throttling for the Amazon EC2 API", EC2
Developer Guide, tables "Request token bucket sizes and refill rates"):

* non-mutating (``Describe*``, ``List*``, ``Search*``, ``Get*``): 100, refilled 20 a second;
* unfiltered and unpaginated non-mutating (``DescribeInstances``, ``DescribeInstanceStatus``,
  ``DescribeNetworkInterfaces``, ``DescribeSecurityGroups``, ``DescribeSnapshots``,
  ``DescribeSpotInstanceRequests``, ``DescribeVolumes`` asked without a filter and without
  paging): 50, refilled 10 a second;
* mutating (every other action): 50 / 5; resource-intensive (``AuthorizeSecurityGroupIngress``,
  ``CreateKeyPair``, ``RevokeSecurityGroupIngress``, ...): 50 / 5;
* uncategorized actions with sizes of their own: ``CreateTags``/``DeleteTags`` 100 / 10,
  ``DeregisterImage``, ``DeleteSnapshot``, ``CreateSnapshot``, ``TerminateInstances`` 100 / 5,
  ``RunInstances``, ``StartInstances`` 5 / 2, ``CopyImage`` 100 / 1, ... (``UNCATEGORIZED``).

Each request takes one token from its action's bucket; an empty bucket answers
``RequestLimitExceeded`` (HTTP 503, as botocore expects, and retried by its standard mode) and
takes nothing; every bucket refills continuously at its rate up to its size, by the real clock
(``time.monotonic``: AWS's throttling runs on wall time, not on the sandbox's ageing clock).

Off by default; ``sb.configure(token_buckets=True)`` or ``POST /_sandbox/throttling
{"enabled": true}`` turns it on with AWS's sizes. ``scale`` multiplies every size and rate (a test
may shrink them to see throttling with few requests); ``actions`` sets one action's ``[size,
refill]``, ``classes`` one category's. ``GET /_sandbox/throttling`` shows how many requests each
action had throttled, and per caller (the access key that signed them), so a bench can tell who
was pushed back. A reset turns it off.

Not modelled: the console's own category (requests from the EC2 console), the resource-rate
buckets (``RunInstances`` 1000 instances / 2 per second, ...), and other services' throttling
(Auto Scaling, ELB, SSM publish no such tables; counted faults, ``faults.py``, throttle those).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# category -> (bucket maximum capacity, refill per second)
CLASSES: dict[str, tuple[float, float]] = {
    "non-mutating": (100, 20),
    "unfiltered-unpaginated": (50, 10),
    "mutating": (50, 5),
    "resource-intensive": (50, 5),
}
UNFILTERED_UNPAGINATED = frozenset(
    {
        "DescribeInstances",
        "DescribeInstanceStatus",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "DescribeSnapshots",
        "DescribeSpotInstanceRequests",
        "DescribeVolumes",
    }
)
RESOURCE_INTENSIVE = frozenset(
    {
        "AcceptVpcPeeringConnection",
        "AuthorizeSecurityGroupIngress",
        "CancelSpotInstanceRequests",
        "CreateKeyPair",
        "CreateVpcPeeringConnection",
        "DeleteVpcPeeringConnection",
        "RejectVpcPeeringConnection",
        "RevokeSecurityGroupIngress",
        "RequestSpotInstances",
    }
)
# The uncategorized actions a release or a retention run can make (AWS's table has ~100).
UNCATEGORIZED: dict[str, tuple[float, float]] = {
    "AssignPrivateIpAddresses": (100, 5),
    "AssociateIamInstanceProfile": (100, 5),
    "CopyImage": (100, 1),
    "CreateDefaultSubnet": (1, 1),
    "CreateDefaultVpc": (1, 1),
    "CreateLaunchTemplateVersion": (100, 5),
    "CreateNatGateway": (10, 1),
    "CreateNetworkInterface": (100, 5),
    "CreateSnapshot": (100, 5),
    "CreateSnapshots": (100, 5),
    "CreateTags": (100, 10),
    "CreateVolume": (100, 5),
    "CreateVpcEndpoint": (4, 0.3),
    "DeleteNatGateway": (10, 1),
    "DeleteNetworkInterface": (100, 5),
    "DeleteSnapshot": (100, 5),
    "DeleteTags": (100, 10),
    "DeleteVolume": (100, 5),
    "DeleteVpcEndpoints": (4, 0.3),
    "DeregisterImage": (100, 5),
    "DisassociateIamInstanceProfile": (100, 5),
    "ModifyImageAttribute": (100, 5),
    "ModifyInstanceMetadataOptions": (100, 5),
    "ModifyLaunchTemplate": (100, 5),
    "ModifyNetworkInterfaceAttribute": (100, 5),
    "ModifySnapshotAttribute": (100, 5),
    "ModifyVpcEndpoint": (4, 0.3),
    "RunInstances": (5, 2),
    "StartInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "UnassignPrivateIpAddresses": (100, 5),
}
NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")
THROTTLE_CODE, THROTTLE_STATUS, THROTTLE_MESSAGE = "RequestLimitExceeded", 503, "Request limit exceeded."


def is_paged_or_filtered(params: dict[str, list[str]]) -> bool:
    """Whether an EC2 query request pages (``MaxResults``/``NextToken``) or narrows its answer
    (``Filter.N``, or ids such as ``InstanceId.N``: AWS says "a filter"; ids narrow it as much)."""
    return any(
        k in ("MaxResults", "NextToken") or k.startswith("Filter.") or k.split(".", 1)[0].endswith("Id") for k in params
    )


def category(action: str, params: dict[str, list[str]] | None = None) -> str:
    if action in UNCATEGORIZED:
        return "uncategorized"
    if action in RESOURCE_INTENSIVE:
        return "resource-intensive"
    if action.startswith(NON_MUTATING_PREFIXES):
        if action in UNFILTERED_UNPAGINATED and not is_paged_or_filtered(params or {}):
            return "unfiltered-unpaginated"
        return "non-mutating"
    return "mutating"


@dataclass
class Bucket:
    capacity: float
    refill: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.refill)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class TokenBuckets:
    """EC2's buckets for every (account, Region, action, category) seen (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.enabled = False
        self.scale = 1.0
        self.classes: dict[str, tuple[float, float]] = dict(CLASSES)
        self.actions: dict[str, tuple[float, float]] = {}
        self._buckets: dict[tuple[str, str, str, str], Bucket] = {}
        self.allowed: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.throttled_by_caller: Counter[tuple[str, str]] = Counter()

    def configure(
        self,
        enabled: bool = True,
        scale: float | None = None,
        classes: dict[str, Any] | None = None,
        actions: dict[str, Any] | None = None,
    ) -> None:
        """Turn the mode on or off; ``scale`` (> 0) multiplies AWS's sizes and rates; ``classes``/
        ``actions`` map a category / an action to ``[size, refill per second]``. Buckets start full."""
        if scale is not None and not float(scale) > 0:
            raise ValueError(f"scale must be more than 0, got {scale!r}")
        for name in classes or {}:
            if name not in CLASSES:
                raise ValueError(f"unknown category {name!r}; use one of {', '.join(CLASSES)}")
        new_classes = {name: _pair(name, pair) for name, pair in (classes or {}).items()}
        new_actions = {name: _pair(name, pair) for name, pair in (actions or {}).items()}
        with self._lock:
            self.enabled = bool(enabled)
            if scale is not None:
                self.scale = float(scale)
            self.classes.update(new_classes)
            self.actions.update(new_actions)
            self._buckets.clear()
            self.allowed.clear()
            self.throttled.clear()
            self.throttled_by_caller.clear()

    def clear(self) -> None:
        with self._lock:
            self.enabled = False
            self.scale = 1.0
            self.classes = dict(CLASSES)
            self.actions = {}
            self._buckets.clear()
            self.allowed.clear()
            self.throttled.clear()
            self.throttled_by_caller.clear()

    def limits(self, action: str, params: dict[str, list[str]] | None = None) -> tuple[str, float, float]:
        """(category, bucket size, refill per second) of one request, scaled."""
        kind = category(action, params)
        if action in self.actions:
            size, rate = self.actions[action]
        elif kind == "uncategorized":
            size, rate = UNCATEGORIZED[action]
        else:
            size, rate = self.classes[kind]
        return kind, size * self.scale, rate * self.scale

    def take(
        self, service: str, action: str, account: str, region: str, params: dict[str, list[str]], caller: str = ""
    ) -> bool:
        """Spend a token for this request; False: throttle it (nothing is spent)."""
        if not self.enabled or service != "ec2":
            return True
        kind, size, rate = self.limits(action, params)
        key = (account, region, action, kind)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = Bucket(size, rate, size, now)
            ok = bucket.take(now)
            name = f"{service}:{action}"
            if ok:
                self.allowed[name] += 1
            else:
                self.throttled[name] += 1
                self.throttled_by_caller[(caller, name)] += 1
            return ok

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            by_caller: dict[str, dict[str, int]] = {}
            for (caller, name), n in sorted(self.throttled_by_caller.items()):
                by_caller.setdefault(caller or "unsigned", {})[name] = n
            return {
                "enabled": self.enabled,
                "scale": self.scale,
                "classes": {k: list(v) for k, v in self.classes.items()},
                "actions": {k: list(v) for k, v in self.actions.items()},
                "allowed": dict(sorted(self.allowed.items())),
                "throttled": dict(sorted(self.throttled.items())),
                "throttled_by_caller": by_caller,
            }


def _pair(name: str, pair: Any) -> tuple[float, float]:
    size, rate = (float(x) for x in pair)
    if not (size >= 1 and rate > 0):
        raise ValueError(f"{name}: a bucket needs a size of at least 1 and a refill rate above 0, got {pair!r}")
    return size, rate
