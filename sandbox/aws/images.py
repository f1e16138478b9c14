"""The AMI lifecycle calls moto 5.2.5 lacks or gets wrong, as AWS documents them.

Checked against moto 5.2.5 in server mode before writing this module:

* ``EnableImageDeprecation`` / ``DisableImageDeprecation``: not implemented (HTTP 500).
* ``EnableImageDeregistrationProtection`` / ``DisableImageDeregistrationProtection``: not
  implemented (HTTP 500).
* ``DescribeImageAttribute(Attribute='lastLaunchedTime')``: crashes (``'Ami' object has no
  attribute 'lld'``); ``deregistrationProtection`` is refused.
* ``DisableImage``: flips the state to ``disabled``, but the image is still listed by
  ``DescribeImages`` and still launches instances.
* ``DeregisterImage(DeleteAssociatedSnapshots=True)``: the flag is ignored.

What this module makes the sandbox do (EC2 API reference and user guide, "Deprecate an AMI",
"Disable an AMI", "Protect an AMI from deregistration"):

* **Deprecation**: ``EnableImageDeprecation(ImageId, DeprecateAt)`` sets ``DeprecationTime``
  (shown by ``DescribeImages``); seconds are rounded to the nearest minute; a time in the
  past is refused (``InvalidParameterValue``; AWS documents "you can't specify a date in the
  past" but not the code: this is the closest documented one), as is one more than 10 years
  ahead. ``DisableImageDeprecation`` clears it. ``DescribeImages`` leaves deprecated images of
  *other* owners out unless ``IncludeDeprecated`` is true or they are asked for by id; an
  owner always sees its own.
* **Disabled images**: ``DescribeImages`` leaves ``disabled`` images out unless
  ``IncludeDisabled`` is true; ``RunInstances`` (also an Auto Scaling launch) from a disabled
  image is refused with ``InvalidAMIID.Unavailable`` (AWS documents that a disabled AMI
  cannot launch instances, not the code). ``EnableImage`` makes it available again.
* **Deregistration protection**: ``EnableImageDeregistrationProtection(ImageId,
  WithCooldown)`` → ``DeregistrationProtection`` ``enabled-with-cooldown`` /
  ``enabled-without-cooldown``; ``DisableImageDeregistrationProtection`` → ``disabled``, or,
  after protection with cooldown, ``disabled-until <time>`` 24 hours ahead by the sandbox's
  clock (moto's ``utcnow``, which freezegun moves; ``ageing.age_account`` moves the time
  back). ``DeregisterImage`` of a protected image, or one in its cooldown, is refused with
  ``OperationNotPermitted``: AWS documents the refusal but not its code; this is the code
  EC2 documents for the same situation with instance termination protection.
* **lastLaunchedTime**: ``RunInstances`` stamps the image; ``DescribeImageAttribute`` and
  ``DescribeImages`` (``LastLaunchedTime``) return it (absent until the first launch).
* **DeleteAssociatedSnapshots**: ``DeregisterImage`` deletes the image's snapshots that no
  other image uses and answers ``DeleteSnapshotResults`` (``success``; ``skipped`` for a
  snapshot another image still uses), as the API reference says.

The Recycle Bin (deregistration into a retention window) is ``sandbox/aws/recycle_bin.py``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError, UnvailableAMIIdError
from moto.ec2.models import amis as _amis
from moto.ec2.models import instances as _instances
from moto.ec2.responses import amis as _amis_responses

COOLDOWN = timedelta(hours=24)
MAX_DEPRECATION_AHEAD = timedelta(days=3653)  # "10 years from now"
_ORIGINAL: dict[str, Any] = {}
_REQUEST = threading.local()  # DescribeImages' IncludeDeprecated/IncludeDisabled, per request thread


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


# ----------------------------------------------------------------------------- state on the Ami
def _deprecation_time(self: Any) -> str | None:
    return _iso(self.__dict__.get("_sb_deprecate_at"))


def _deregistration_protection(self: Any) -> str:
    mode = self.__dict__.get("_sb_protection")
    if mode == "with":
        return "enabled-with-cooldown"
    if mode == "without":
        return "enabled-without-cooldown"
    until = self.__dict__.get("_sb_protected_until")
    if until is not None and until > utcnow():
        return f"disabled-until {_iso(until)}"
    return "disabled"


def _last_launched_time(self: Any) -> str | None:
    return _iso(self.__dict__.get("_sb_last_launched"))


def is_protected(ami: Any) -> bool:
    """Deregistration is refused now (protection on, or its cooldown still running)."""
    return ami.deregistration_protection != "disabled"


def is_deprecated(ami: Any) -> bool:
    at = ami.__dict__.get("_sb_deprecate_at")
    return at is not None and at <= utcnow()


def shift_times(ami: Any, delta: timedelta) -> None:
    """Move the image's lifecycle times ``delta`` back (``ageing.age_account``)."""
    for key in ("_sb_deprecate_at", "_sb_protected_until", "_sb_last_launched"):
        value = ami.__dict__.get(key)
        if value is not None:
            ami.__dict__[key] = value - delta


class OperationNotPermitted(EC2ClientError):
    def __init__(self, message: str) -> None:
        super().__init__("OperationNotPermitted", message)


class InvalidParameterValue(EC2ClientError):
    def __init__(self, message: str) -> None:
        super().__init__("InvalidParameterValue", message)


# ----------------------------------------------------------------------------- backend
def _get_ami(backend: Any, ami_id: str) -> Any:
    if ami_id in backend.amis:
        return backend.amis[ami_id]
    if ami_id in backend.deleted_amis:
        raise UnvailableAMIIdError(ami_id)
    raise InvalidAMIIdError(ami_id)


def _describe_images(self: Any, ami_ids: list[str] | None = None, filters: Any = None, **kwargs: Any) -> list[Any]:
    images = _ORIGINAL["describe_images"](self, ami_ids=ami_ids, filters=filters, **kwargs)
    opts = getattr(_REQUEST, "options", None)
    if opts is None:  # a backend-internal lookup (RunInstances, Instance()): no API visibility rules
        return images
    include_deprecated, include_disabled = opts
    own = self.account_id
    out = []
    for ami in images:
        if ami.state == "disabled" and not include_disabled:
            continue
        if not include_deprecated and not ami_ids and ami.owner_id != own and is_deprecated(ami):
            continue
        out.append(ami)
    return out


def _deregister_image(self: Any, ami_id: str) -> None:
    ami = self.amis.get(ami_id)
    if ami is not None and is_protected(ami):
        raise OperationNotPermitted(
            f"The image '{ami_id}' has deregistration protection enabled "
            f"({ami.deregistration_protection}); disable it first "
            "(DisableImageDeregistrationProtection)."
        )
    _ORIGINAL["deregister_image"](self, ami_id)


def _run_instances(self: Any, image_id: str, *args: Any, **kwargs: Any) -> Any:
    ami = self.amis.get(image_id) if image_id else None
    if ami is not None and ami.state == "disabled":
        raise UnvailableAMIIdError(image_id)
    reservation = _ORIGINAL["run_instances"](self, image_id, *args, **kwargs)
    if ami is not None:
        ami.__dict__["_sb_last_launched"] = utcnow()
    return reservation


# ----------------------------------------------------------------------------- responses
def _r_describe_images(self: Any) -> Any:
    _REQUEST.options = (
        self._get_bool_param("IncludeDeprecated", False),
        self._get_bool_param("IncludeDisabled", False),
    )
    try:
        return _ORIGINAL["r_describe_images"](self)
    finally:
        _REQUEST.options = None


def _r_enable_image_deprecation(self: Any) -> ActionResult:
    ami_id = self._get_param("ImageId")
    raw = self._get_param("DeprecateAt")
    self.error_on_dryrun()
    ami = _get_ami(self.ec2_backend, ami_id)
    try:
        at = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameterValue(f"Value ({raw}) for parameter DeprecateAt is invalid.") from None
    at = _naive_utc(at)
    at = (at + timedelta(seconds=30)).replace(second=0, microsecond=0)  # rounded to the nearest minute
    now = utcnow()
    if at < now.replace(second=0, microsecond=0):
        raise InvalidParameterValue(f"The deprecation time {_iso(at)} is in the past; specify a future time.")
    if at > now + MAX_DEPRECATION_AHEAD:
        raise InvalidParameterValue(f"The deprecation time {_iso(at)} is more than 10 years from now.")
    ami.__dict__["_sb_deprecate_at"] = at
    return ActionResult({"Return": True})


def _r_disable_image_deprecation(self: Any) -> ActionResult:
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    ami = _get_ami(self.ec2_backend, ami_id)
    ami.__dict__["_sb_deprecate_at"] = None
    return ActionResult({"Return": True})


def _r_enable_protection(self: Any) -> ActionResult:
    ami_id = self._get_param("ImageId")
    with_cooldown = self._get_bool_param("WithCooldown", False)
    self.error_on_dryrun()
    ami = _get_ami(self.ec2_backend, ami_id)
    ami.__dict__["_sb_protection"] = "with" if with_cooldown else "without"
    ami.__dict__["_sb_protected_until"] = None
    return ActionResult({"Return": "true"})


def _r_disable_protection(self: Any) -> ActionResult:
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    ami = _get_ami(self.ec2_backend, ami_id)
    if ami.__dict__.get("_sb_protection") == "with":
        ami.__dict__["_sb_protected_until"] = utcnow() + COOLDOWN
    ami.__dict__["_sb_protection"] = None
    return ActionResult({"Return": "true"})


def _r_describe_image_attribute(self: Any) -> Any:
    attribute = self._get_param("Attribute")
    if attribute not in ("lastLaunchedTime", "deregistrationProtection"):
        return _ORIGINAL["r_describe_image_attribute"](self)
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    ami = _get_ami(self.ec2_backend, ami_id)
    result: dict[str, Any] = {"ImageId": ami_id}
    if attribute == "lastLaunchedTime":
        value = ami.last_launched_time
        result["LastLaunchedTime"] = {"Value": value} if value else {}
    else:
        result["DeregistrationProtection"] = {"Value": ami.deregistration_protection}
    return ActionResult(result)


def _r_deregister_image(self: Any) -> ActionResult:
    ami_id = self._get_param("ImageId")
    delete_snapshots = self._get_bool_param("DeleteAssociatedSnapshots", False)
    self.error_on_dryrun()
    backend = self.ec2_backend
    ami = backend.amis.get(ami_id)
    snapshot_ids = []
    if ami is not None and getattr(ami, "ebs_snapshot", None) is not None:
        snapshot_ids = [ami.ebs_snapshot.id]
    backend.deregister_image(ami_id)
    result: dict[str, Any] = {"Return": True}
    if delete_snapshots:
        outcomes = []
        for snapshot_id in snapshot_ids:
            used = any(
                getattr(other, "ebs_snapshot", None) is not None and other.ebs_snapshot.id == snapshot_id
                for other in backend.amis.values()
            )
            if used:
                outcomes.append({"SnapshotId": snapshot_id, "ReturnCode": "skipped"})
                continue
            try:
                backend.delete_snapshot(snapshot_id)
            except EC2ClientError:
                outcomes.append({"SnapshotId": snapshot_id, "ReturnCode": "client-error"})
            else:
                outcomes.append({"SnapshotId": snapshot_id, "ReturnCode": "success"})
        result["DeleteSnapshotResults"] = outcomes
    return ActionResult(result)


def install() -> None:
    """Idempotent; after ``patches.install()`` (it wraps what that installed)."""
    if _ORIGINAL:
        return
    ami_cls = _amis.Ami
    ami_cls.deprecation_time = property(_deprecation_time)  # type: ignore[attr-defined]
    ami_cls.deregistration_protection = property(_deregistration_protection)  # type: ignore[attr-defined]
    ami_cls.last_launched_time = property(_last_launched_time)  # type: ignore[attr-defined]
    # moto's DescribeImageAttribute table points lastLaunchedTime at a missing attribute "lld"
    ami_cls.lld = property(_last_launched_time)  # type: ignore[attr-defined]

    backend = _amis.AmiBackend
    _ORIGINAL["describe_images"] = backend.describe_images
    backend.describe_images = _describe_images  # type: ignore[method-assign]
    _ORIGINAL["deregister_image"] = backend.deregister_image
    backend.deregister_image = _deregister_image  # type: ignore[method-assign]
    _ORIGINAL["run_instances"] = _instances.InstanceBackend.run_instances
    _instances.InstanceBackend.run_instances = _run_instances  # type: ignore[method-assign]

    resp = _amis_responses.AmisResponse
    _ORIGINAL["r_describe_images"] = resp.describe_images
    resp.describe_images = _r_describe_images  # type: ignore[method-assign]
    _ORIGINAL["r_describe_image_attribute"] = resp.describe_image_attribute
    resp.describe_image_attribute = _r_describe_image_attribute  # type: ignore[method-assign]
    _ORIGINAL["r_deregister_image"] = resp.deregister_image
    resp.deregister_image = _r_deregister_image  # type: ignore[method-assign]
    resp.enable_image_deprecation = _r_enable_image_deprecation  # type: ignore[attr-defined]
    resp.disable_image_deprecation = _r_disable_image_deprecation  # type: ignore[attr-defined]
    resp.enable_image_deregistration_protection = _r_enable_protection  # type: ignore[attr-defined]
    resp.disable_image_deregistration_protection = _r_disable_protection  # type: ignore[attr-defined]
