"""The optional "scream test": disable a marked AMI some days before it is due.

A disabled AMI (``DisableImage``) cannot launch instances — so a user nobody knew about (a
group in another account, a script, a launch template we cannot see) fails loudly while the
image is still one ``EnableImage`` away from back, instead of after it is gone. Off by default
(policy ``scream_test_days: 0``).

The rule, as a pure function of the run's plan (``changes``):

* **Disable** an image that is eligible and marked (this run's new mark, a mark kept, a due
  image deferred by the cap or held back for the Recycle Bin) whose due time is at most
  ``scream_test_days`` away, and that is ``available``. The run tags it
  ``AmiRetentionDisabled=<when>`` so that only what retention disabled is ever enabled again.
* **Enable** again an image retention disabled (the tag) that is no longer in that set: it
  was unmarked (a use, a hold, a tag), its mark moved out of the window, or the policy turned
  the scream test off. A group that needs the image makes it "in use" in the next run, which
  unmarks and enables it: the scream lasts one run interval.
* An image somebody else disabled (no tag of ours) is left as it is; an image the run
  deregisters is not touched.

What it risks (docs/retention.md): for those days, any launch from the image fails — a group
scaling out on it, an Auto Scaling instance refresh, a person's ``run-instances``. That is the
point, and the reason it is off by default: turn it on where a failed launch is cheaper than a
missing image. Disabling also makes a public or shared image private (AWS's rule); enabling
does not share it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from amirelease.retention.aws import one_call_each
from amirelease.retention.decide import Action, Plan
from amirelease.retention.model import Image
from amirelease.retention.policy import RetentionPolicy

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

log = logging.getLogger(__name__)

DISABLED_TAG = "AmiRetentionDisabled"  # set by the run that disabled the image: only those are enabled again
IAM_ACTIONS = ("ec2:DisableImage", "ec2:EnableImage")  # plus CreateTags/DeleteTags, which retention has
WORKERS = 10  # one call per image (no batch API), as wide as botocore's pool

# actions of an eligible, marked image that stays registered after this run
_MARKED = (Action.MARK, Action.KEEP, Action.DEFERRED)


def changes(plan: Plan, images: Iterable[Image], now: datetime, policy: RetentionPolicy) -> tuple[list[str], list[str]]:
    """(image ids to disable, image ids to enable again); nothing on a dry or stopped run."""
    if plan.dry_run or plan.stopped:
        return [], []
    by_id = {i.image_id: i for i in images}
    window = timedelta(days=policy.scream_test_days)
    disable: list[str] = []
    enable: list[str] = []
    for d in plan.decisions:
        image = by_id.get(d.image_id)
        if image is None or d.action is Action.DEREGISTER:
            continue
        ours = image.state == "disabled" and DISABLED_TAG in image.tags
        scream = (
            policy.scream_test_days > 0
            and d.action in _MARKED
            and not d.protections
            and d.due is not None
            and d.due - now <= window
        )
        if scream and image.state == "available":
            disable.append(d.image_id)
        elif ours and not scream:
            enable.append(d.image_id)
    return disable, enable


def sync(
    ec2: EC2Client,
    plan: Plan,
    images: Iterable[Image],
    now: datetime,
    policy: RetentionPolicy,
    *,
    workers: int = WORKERS,
) -> dict[str, Any]:
    """Apply :func:`changes`: ``DisableImage`` + our tag, ``EnableImage`` + tag removed.
    Errors are returned (the next run tries again), never raised: the marks stand either way."""
    to_disable, to_enable = changes(plan, images, now, policy)
    out: dict[str, Any] = {"disabled": 0, "enabled_again": 0, "scream_test_errors": []}
    if not to_disable and not to_enable:
        return out
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")

    def disable(image_id: str) -> None:  # the tag first: an image disabled without it would never be enabled by us
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": DISABLED_TAG, "Value": stamp}])
        ec2.disable_image(ImageId=image_id)

    def enable(image_id: str) -> None:  # enabled first: a failure leaves the tag, so the next run tries again
        ec2.enable_image(ImageId=image_id)
        ec2.delete_tags(Resources=[image_id], Tags=[{"Key": DISABLED_TAG}])

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="retention-scream") as pool:
        enable_errors = one_call_each(pool, to_enable, enable, lambda image_id: f"enable {image_id} again")
        disable_errors = one_call_each(pool, to_disable, disable, lambda image_id: f"disable {image_id}")
    out["disabled"] = len(to_disable) - len(disable_errors)
    out["enabled_again"] = len(to_enable) - len(enable_errors)
    out["scream_test_errors"] = enable_errors + disable_errors
    for error in out["scream_test_errors"]:
        log.warning("%s (the next run tries again)", error)
    return out


def note(image: Mapping[str, Any]) -> str:
    """(pure) For a person: 'disabled by retention on … (scream test)' from an image's state and tags."""
    tags = image.get("Tags") or {}
    if isinstance(tags, list):
        tags = {t["Key"]: t["Value"] for t in tags}
    if image.get("State") != "disabled":
        return ""
    when = tags.get(DISABLED_TAG)
    if when:
        return f"disabled by retention since {when} (scream test: launches fail until it is enabled or goes)"
    return "disabled (not by retention)"
