"""AWS guards what runs: EC2 deregistration protection on the AMIs a release may need.

Protected (``EnableImageDeregistrationProtection``, with the 24-hour cooldown, so lifting it
leaves a day before anything can deregister the image):

* the AMIs of the live release of an app (its newest succeeded release that was not rolled
  back) and of the ``protect_releases`` good releases before it (the rollback targets;
  ``[ami_release] protect_releases``, default 2), in every region;
* every AMI under a forensic hold (a ``forensic_hold`` in the ledger that was not lifted).

Lifted (``DisableImageDeregistrationProtection``) from an AMI that falls out of that set — a
later release pushed it out of the window, or its hold was lifted — but **only** where this
module put the protection (the release's ledger record says so: ``deregistration_protection``),
never a protection somebody else set. Retention never lifts protection: it keeps a protected
image (``protected from deregistration by AWS``), and AWS refuses a person's
``aws ec2 deregister-image`` on it.

:func:`wanted` is pure; :func:`sync` applies it. Called, under the app's lock, by the release's
record step after a release succeeded, when a hold is lifted (``holds.lift_hold``) and when an
image is restored (``retention/restore.py``). A failure to protect is logged, not raised: the
release itself has happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from amirelease.errors import AwsErrorFamily, aws_error_code, aws_error_family
from amirelease.ledger import Ledger, Record, utcnow

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

log = logging.getLogger(__name__)

DEFAULT_PROTECT_RELEASES = 2
IAM_ACTIONS = (
    "ec2:DescribeImages",
    "ec2:DisableImageDeregistrationProtection",
    "ec2:EnableImageDeregistrationProtection",
)


def protect_releases() -> int:
    from airflow.sdk.configuration import conf

    raw = conf.get("ami_release", "protect_releases", fallback="") or str(DEFAULT_PROTECT_RELEASES)
    value = int(raw)
    if value < 0:
        raise ValueError(f"[ami_release] protect_releases must be 0 or more, got {value}")
    return value


def _held(record: Record) -> bool:
    hold = record.get("forensic_hold")
    return isinstance(hold, dict) and bool(hold) and not hold.get("released_at")


def _amis(record: Record) -> dict[str, str]:
    amis = {str(r): str(a) for r, a in (record.get("amis") or {}).items() if a}
    hold = record.get("forensic_hold") or {}
    if _held(record):
        amis.update({str(r): str(a) for r, a in (hold.get("amis") or {}).items() if a})
    return amis


@dataclass(frozen=True)
class Want:
    protect: dict[str, dict[str, str]]  # release id -> {region: ami} to protect, with why
    why: dict[str, str]
    lift: dict[str, dict[str, str]]  # release id -> {region: ami} we protected that may go


def wanted(history: Sequence[Record], keep: int) -> Want:
    """(pure) ``history``: an app's records, oldest first."""
    good = [r for r in history if r.get("outcome") == "succeeded" and not r.get("rolled_back")]
    window = list(reversed(good))[: 1 + keep]
    protect: dict[str, dict[str, str]] = {}
    why: dict[str, str] = {}
    for n, r in enumerate(window):
        protect[r["release_id"]] = _amis(r)
        why[r["release_id"]] = "the live release" if n == 0 else f"rollback target {n} of {keep}"
    for r in history:
        if _held(r):
            protect.setdefault(r["release_id"], {}).update(_amis(r))
            why.setdefault(r["release_id"], "under a forensic hold")
    lift: dict[str, dict[str, str]] = {}
    for r in history:
        mine = r.get("deregistration_protection") or {}
        if r["release_id"] in protect or not mine.get("amis") or mine.get("lifted_at"):
            continue
        lift[r["release_id"]] = {str(k): str(v) for k, v in mine["amis"].items()}
    return Want(protect=protect, why=why, lift=lift)


@dataclass
class Synced:
    protected: list[str] = field(default_factory=list)  # "ami (region): why"
    already: list[str] = field(default_factory=list)
    lifted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _state(ec2: EC2Client, ami: str) -> str | None:
    try:
        images = ec2.describe_images(ImageIds=[ami], IncludeDisabled=True)["Images"]
    except ClientError as exc:
        if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
            return None
        raise
    return str(images[0].get("DeregistrationProtection") or "disabled") if images else None


def sync(ledger: Ledger, ec2_for: Callable[[str], Any], app: str, keep: int) -> Synced:
    """Protect what :func:`wanted` says, lift what fell out; record it in the ledger records."""
    history = ledger.history(app)
    want = wanted(history, keep)
    by_id = {r["release_id"]: r for r in history}
    out = Synced()
    now = utcnow()
    for release_id, amis in want.protect.items():
        done: dict[str, str] = {}
        for region, ami in sorted(amis.items()):
            try:
                state = _state(ec2_for(region), ami)
                if state is None:
                    continue  # gone: nothing to protect
                if state.startswith("enabled"):
                    out.already.append(f"{ami} ({region})")
                    mine = (by_id[release_id].get("deregistration_protection") or {}).get("amis") or {}
                    if mine.get(region) == ami:
                        done[region] = ami
                    continue
                ec2_for(region).enable_image_deregistration_protection(ImageId=ami, WithCooldown=True)
                done[region] = ami
                out.protected.append(f"{ami} ({region}): {want.why[release_id]}")
            except ClientError as exc:
                out.errors.append(f"protect {ami} ({region}): {aws_error_code(exc)}")
        if done and (by_id[release_id].get("deregistration_protection") or {}).get("amis") != done:
            ledger.update(
                app, release_id, deregistration_protection={"amis": done, "since": now, "why": want.why[release_id]}
            )
    for release_id, amis in want.lift.items():
        failed = False
        for region, ami in sorted(amis.items()):
            try:
                if _state(ec2_for(region), ami) is None:
                    continue
                ec2_for(region).disable_image_deregistration_protection(ImageId=ami)
                out.lifted.append(f"{ami} ({region})")
            except ClientError as exc:
                failed = True
                out.errors.append(f"lift protection of {ami} ({region}): {aws_error_code(exc)}")
        if not failed:
            mine = dict(by_id[release_id].get("deregistration_protection") or {})
            mine["lifted_at"] = now
            ledger.update(app, release_id, deregistration_protection=mine)
    for line in out.protected:
        log.info("Deregistration protection on %s", line)
    for line in out.lifted:
        log.info("Deregistration protection lifted from %s (out of the rollback window; 24 h cooldown)", line)
    for line in out.errors:
        log.warning("%s", line)
    return out
