"""``DescribeImageReferences``, which moto 5.2.5 does not serve (HTTP 500).

As the EC2 API reference and the user guide ("Identify your resources referencing specified
AMIs") describe it:

* ``ImageIds``: 1-10 images (more or none: ``InvalidParameterValue``); either
  ``IncludeAllResourceTypes`` or ``ResourceTypes`` must be given (neither:
  ``MissingParameter``).
* Resource types: ``ec2:Instance`` (option ``state-name``: which instance states count;
  default: every state), ``ec2:LaunchTemplate`` (option ``version-depth``: how many versions,
  newest first, are checked; 1-10000, default 10), ``ssm:Parameter`` (parameters whose current
  value is the image id). ``imagebuilder:ImageRecipe``/``ContainerRecipe`` are accepted and
  find nothing (moto has no Image Builder recipes referencing images). Options given in
  ``ResourceTypes`` override the defaults ``IncludeAllResourceTypes`` applies.
* One ``ImageReference`` (``ImageId``, ``ResourceType``, ``Arn``) per referencing resource
  and image; a launch template counts once however many of its checked versions name the
  image.
* Paging: ``MaxResults`` 5-1000 (botocore's model gives the minimum; AWS documents no
  maximum, 1000 chosen as on the other EC2 listings), ``NextToken``; without ``MaxResults``
  everything comes back at once.

What AWS's check does **not** cover, and neither does this one: Auto Scaling groups and
launch configurations (the product's own reference model covers them).
"""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import amis as _amis_responses

from . import paging

TYPES = (
    "ec2:Instance",
    "ec2:LaunchTemplate",
    "ssm:Parameter",
    "imagebuilder:ImageRecipe",
    "imagebuilder:ContainerRecipe",
)
INSTANCE_STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
DEFAULT_VERSION_DEPTH = 10
MAX_IMAGES = 10


def _invalid(message: str) -> EC2ClientError:
    return EC2ClientError("InvalidParameterValue", message)


def _options(self: Any) -> dict[str, dict[str, list[str]]]:
    """{resource type: {option: values}} after defaults and overrides."""
    include_all = self._get_bool_param("IncludeAllResourceTypes", False)
    requested = self._get_param("ResourceTypes", []) or []
    if not include_all and not requested:
        raise EC2ClientError("MissingParameter", "Either IncludeAllResourceTypes or ResourceTypes must be specified.")
    chosen: dict[str, dict[str, list[str]]] = {t: {} for t in TYPES} if include_all else {}
    for entry in requested:
        rtype = entry.get("ResourceType")
        if rtype not in TYPES:
            raise _invalid(f"Unsupported resource type {rtype!r}; supported: {', '.join(TYPES)}.")
        opts = chosen.setdefault(rtype, {})
        for opt in entry.get("ResourceTypeOptions", []) or []:
            name = opt.get("OptionName")
            values = [str(v) for v in opt.get("OptionValues", []) or []]
            if (rtype, name) not in (("ec2:Instance", "state-name"), ("ec2:LaunchTemplate", "version-depth")):
                raise _invalid(f"Option {name!r} does not apply to {rtype}.")
            opts[name] = values
    return chosen


def _version_depth(values: list[str] | None) -> int:
    if not values:
        return DEFAULT_VERSION_DEPTH
    try:
        depth = int(values[0])
    except ValueError:
        raise _invalid(f"version-depth must be an integer, got {values[0]!r}.") from None
    if not 1 <= depth <= 10000:
        raise _invalid("version-depth must be between 1 and 10000.")
    return depth


def references(self: Any, image_ids: list[str], chosen: dict[str, dict[str, list[str]]]) -> list[dict[str, str]]:
    backend = self.ec2_backend
    account, region = backend.account_id, backend.region_name
    wanted = set(image_ids)
    out: list[dict[str, str]] = []
    if "ec2:Instance" in chosen:
        states = chosen["ec2:Instance"].get("state-name") or list(INSTANCE_STATES)
        bad = [s for s in states if s not in INSTANCE_STATES]
        if bad:
            raise _invalid(f"Unknown instance state(s) {bad}.")
        for reservation in backend.reservations.values():
            for inst in reservation.instances:
                if inst.image_id in wanted and inst.state in states:
                    out.append(
                        {
                            "ImageId": inst.image_id,
                            "ResourceType": "ec2:Instance",
                            "Arn": f"arn:aws:ec2:{region}:{account}:instance/{inst.id}",
                        }
                    )
    if "ec2:LaunchTemplate" in chosen:
        depth = _version_depth(chosen["ec2:LaunchTemplate"].get("version-depth"))
        for template in backend.launch_templates.values():
            checked = sorted(template.versions, key=lambda v: v.number)[-depth:]
            for image_id in sorted({v.image_id for v in checked if v.image_id in wanted}):
                out.append(
                    {
                        "ImageId": image_id,
                        "ResourceType": "ec2:LaunchTemplate",
                        "Arn": f"arn:aws:ec2:{region}:{account}:launch-template/{template.id}",
                    }
                )
    if "ssm:Parameter" in chosen:
        from moto.ssm.models import ssm_backends

        params = ssm_backends[account][region]._parameters
        for name, versions in list(dict.items(params)):
            if versions and versions[-1].value in wanted:
                out.append(
                    {
                        "ImageId": versions[-1].value,
                        "ResourceType": "ssm:Parameter",
                        "Arn": f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}",
                    }
                )
    return out


def _r_describe_image_references(self: Any) -> ActionResult:
    image_ids = self._get_param("ImageIds", []) or []
    self.error_on_dryrun()
    if not 1 <= len(image_ids) <= MAX_IMAGES:
        raise _invalid(f"ImageIds must name between 1 and {MAX_IMAGES} images; got {len(image_ids)}.")
    chosen = _options(self)
    found = references(self, image_ids, chosen)
    refs, nxt = paging.page(self, found, 5, 1000)
    result: dict[str, Any] = {"ImageReferences": refs}
    if nxt:
        result["NextToken"] = nxt
    return ActionResult(result)


def install() -> None:
    _amis_responses.AmisResponse.describe_image_references = _r_describe_image_references  # type: ignore[attr-defined]
