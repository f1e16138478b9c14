"""Lifting a forensic hold: the one place that does it.

A rollback puts the AMI(s) it replaces under a forensic hold: tags ``ForensicHold`` and
``ForensicHoldReason`` on the AMI (retention never touches a held AMI) and a
``forensic_hold`` entry in the release's ledger record. When the investigation is over,
somebody lifts the hold with a reason: the tags go from every AMI of the release and the
ledger record keeps who lifted it, when and why (the hold itself stays in the record).

Used by the Releases page in the Airflow UI and by ``make release-hold`` (amirelease.cli).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from amirelease.constants import DEFAULT_AWS_CONN_ID, HOLD_REASON_TAG, HOLD_TAG, MIN_REASON
from amirelease.errors import AwsErrorFamily, ReleaseError, aws_error_family
from amirelease.ledger import Ledger, ledger_bucket, utcnow

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

MIN_REASON_CHARS = MIN_REASON  # one rule for every reason a person gives: constants.py


class HoldError(ReleaseError):
    """A hold could not be lifted (unknown release, not held, no reason). Nothing was changed."""


@dataclass(frozen=True)
class HoldLifted:
    """What lift_hold did."""

    app: str
    release_id: str
    version: str | None
    released_at: str
    released_by: str
    release_reason: str
    untagged: dict[str, str] = field(default_factory=dict)  # region -> AMI the hold tags were removed from
    gone: dict[str, str] = field(default_factory=dict)  # region -> AMI that no longer exists
    already_lifted: bool = False

    def summary(self) -> str:
        """One line for a person."""
        what = f"{self.app} {self.version or ''} ({self.release_id})".replace("  ", " ")
        if self.already_lifted:
            return f"The hold on {what} was already lifted on {self.released_at} by {self.released_by}."
        amis = ", ".join(f"{ami} ({region})" for region, ami in sorted(self.untagged.items())) or "no AMI left"
        return (
            f"Hold lifted on {what}: {amis}. Retention applies to it again. "
            f"Recorded in the ledger: {self.released_by}, {self.released_at}, reason: {self.release_reason}"
        )


def release_amis(record: dict[str, Any]) -> dict[str, str]:
    """Every AMI of a release (pure): its baked AMIs and the AMIs its hold names, per region."""
    amis: dict[str, str] = {}
    hold = record.get("forensic_hold") or {}
    for source in (hold.get("amis") or {}, record.get("amis") or {}):
        for region, ami in source.items():
            if ami:
                amis[str(region)] = str(ami)
    return amis


def _ec2(aws_conn_id: str | None, region: str) -> EC2Client:
    from amirelease.aws import AwsClients

    return AwsClients(aws_conn_id=aws_conn_id).ec2(region)


def _ledger(aws_conn_id: str | None) -> Ledger:
    from amirelease.aws import AwsClients

    bucket = ledger_bucket()  # a missing setting is said before any AWS call
    return Ledger(AwsClients(aws_conn_id=aws_conn_id).s3(), bucket)


def _existing_tags(ec2: EC2Client, ami: str) -> dict[str, str] | None:
    """The AMI's tags, or None when the AMI no longer exists (deregistered)."""
    try:
        images = ec2.describe_images(ImageIds=[ami])["Images"]
    except ClientError as exc:
        if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
            return None
        raise
    if not images or images[0].get("State") == "deregistered":  # AWS lists a deregistered AMI for a while
        return None
    return {t["Key"]: t["Value"] for t in images[0].get("Tags") or []}


def _sync_protection(ledger: Ledger, aws_conn_id: str | None, app: str) -> None:
    from amirelease import protection

    try:
        protection.sync(ledger, lambda region: _ec2(aws_conn_id, region), app, protection.protect_releases())
    except (ClientError, ValueError) as exc:  # the hold is lifted; protection follows at the next release
        import logging

        logging.getLogger(__name__).warning("deregistration protection not updated for %s: %s", app, exc)


def lift_hold(
    *,
    app: str,
    release_id: str,
    reason: str,
    by: str,
    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
) -> HoldLifted:
    """Lift the forensic hold on a release: remove the hold tags from every AMI of the
    release, then record ``released_at``/``released_by``/``release_reason`` in the hold of
    its ledger record. Safe to repeat: a lift that stopped half-way is completed, a lifted
    hold is reported as such and not written again.

    Raises HoldError (nothing changed) for a blank reason, an unknown release, or a release
    that is not under a hold.
    """
    reason = " ".join((reason or "").split())
    if len(reason) < MIN_REASON_CHARS:
        raise HoldError(
            f"a reason of at least {MIN_REASON_CHARS} characters is needed to lift a hold",
            resource=f"{app} {release_id}",
            fix="say why the AMI may go back under the retention policy, e.g. 'INC-4711 closed, forensics done'",
        )
    by = (by or "").strip() or "unknown"
    ledger = _ledger(aws_conn_id)

    record = ledger.get(app, release_id)
    if record is None:
        raise HoldError(
            f"there is no ledger record of release {release_id} of {app}",
            resource=f"s3://{ledger.bucket}/releases/{app}/{release_id}.json",
            fix=f"check the release id: `make history APP={app}` lists them (the Releases page too)",
        )

    tagged: dict[str, str] = {}
    gone: dict[str, str] = {}
    existing: dict[str, str] = {}
    for region, ami in sorted(release_amis(record).items()):
        tags = _existing_tags(_ec2(aws_conn_id, region), ami)
        if tags is None:
            gone[region] = ami
            continue
        existing[region] = ami
        if HOLD_TAG in tags or HOLD_REASON_TAG in tags:
            tagged[region] = ami

    hold = dict(record.get("forensic_hold") or {})
    if not hold and not tagged:
        raise HoldError(
            f"release {release_id} of {app} is not under a forensic hold",
            resource=f"{app} {release_id}",
            fix="nothing to lift; the retention policy already applies to its AMIs",
        )
    if hold.get("released_at") and not tagged:
        return HoldLifted(
            app=app,
            release_id=release_id,
            version=record.get("version"),
            released_at=str(hold["released_at"]),
            released_by=str(hold.get("released_by") or "unknown"),
            release_reason=str(hold.get("release_reason") or ""),
            gone=gone,
            already_lifted=True,
        )

    for region, ami in tagged.items():
        _ec2(aws_conn_id, region).delete_tags(Resources=[ami], Tags=[{"Key": HOLD_TAG}, {"Key": HOLD_REASON_TAG}])

    released_at = utcnow()
    hold.setdefault("amis", existing or release_amis(record))
    hold.update(released_at=released_at, released_by=by, release_reason=reason)
    ledger.update(app, release_id, forensic_hold=hold)
    _sync_protection(ledger, aws_conn_id, app)  # lifting a hold lifts its deregistration protection
    return HoldLifted(
        app=app,
        release_id=release_id,
        version=record.get("version"),
        released_at=released_at,
        released_by=by,
        release_reason=reason,
        untagged=tagged,
        gone=gone,
    )
