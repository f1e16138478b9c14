"""Small, behaviour-preserving edits to moto's EC2 models.

* ``fast_tags``: moto answers "what are the tags of resource X" by scanning
  every tag of every resource in the account (``TagBackend.describe_tags``
  with a ``resource-id`` filter), so describing N images costs O(N^2).  The
  fast path answers the single-literal-id case with a dict lookup and hands
  everything else to moto unchanged.  ``tests/sandbox/test_scale.py`` compares
  patched and unpatched responses on the same data.  Likewise moto's
  ``Instance()`` looks its image up by scanning every image
  (``describe_images(filters={"image-id": id})``); a literal id is a dict lookup.
* EBS-backed images: an image whose ``root_device_type`` is ``ebs`` reports a
  gp3 root volume that is deleted on termination (moto reports ``standard``
  for everything); ``CreateImage`` (which on AWS always makes an EBS-backed
  image) gives ``RootDeviceType=ebs``.
* Snapshots shared by two images: ``DeleteSnapshot`` refuses while *any*
  image still uses the snapshot (moto only looks at the image that created
  it).
"""

from __future__ import annotations

import re
from typing import Any

from moto.ec2.exceptions import InvalidSnapshotInUse
from moto.ec2.models import amis as _amis
from moto.ec2.models import elastic_block_store as _ebs
from moto.ec2.models import tags as _tags

_ORIGINAL: dict[str, Any] = {}
_WILDCARD = re.compile(r"[*?\[]")


def _fast_describe_tags(self: Any, filters: dict[str, list[str]] | None = None) -> list[dict[str, str]]:
    if filters is not None and len(filters) == 1 and "resource-id" in filters:
        ids = filters["resource-id"]
        if len(ids) == 1 and isinstance(ids[0], str) and not _WILDCARD.search(ids[0]):
            resource_id = ids[0]
            tags = self.tags.get(resource_id)
            if not tags:
                return []
            resource_type = _tags.EC2_PREFIX_TO_RESOURCE.get(_tags.get_prefix(resource_id), "")
            return [
                {"resource_id": resource_id, "key": key, "value": value, "resource_type": resource_type}
                for key, value in list(tags.items())
            ]
    return _ORIGINAL["describe_tags"](self, filters)


def _fast_describe_images(
    self: Any, ami_ids: Any = None, filters: Any = None, exec_users: Any = None, owners: Any = None
) -> Any:
    # moto's Instance() looks its image up with filters={"image-id": id}: a scan of every image.
    if not ami_ids and not exec_users and not owners and filters and len(filters) == 1 and "image-id" in filters:
        value = filters["image-id"]
        if isinstance(value, str) and not _WILDCARD.search(value):
            ami = self.amis.get(value)
            return [ami] if ami is not None else []
    return _ORIGINAL["describe_images"](self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)


def _ami_block_device_mappings(self: Any) -> list[dict[str, Any]]:
    mappings = _ORIGINAL["block_device_mappings"].fget(self)
    if getattr(self, "root_device_type", None) == "ebs":
        size = getattr(self, "sandbox_volume_size", None) or (30 if self.platform == "windows" else 8)
        for mapping in mappings:
            mapping["Ebs"].update(
                {"VolumeType": "gp3", "DeleteOnTermination": True, "VolumeSize": size, "Encrypted": False}
            )
    return mappings


def _create_image(self: Any, *args: Any, **kwargs: Any) -> Any:
    ami = _ORIGINAL["create_image"](self, *args, **kwargs)
    ami.root_device_type = "ebs"
    if getattr(ami, "instance", None) is not None and ami.root_device_name == "/dev/sda1":
        source = self.amis.get(ami.instance.image_id)
        if source is not None:
            ami.root_device_name = source.root_device_name
            ami.boot_mode = source.boot_mode
    return ami


def _delete_snapshot(self: Any, snapshot_id: str) -> Any:
    for ami in list(self.amis.values()):
        snap = getattr(ami, "ebs_snapshot", None)
        if snap is not None and snap.id == snapshot_id:
            raise InvalidSnapshotInUse(snapshot_id, ami.id)
    return _ORIGINAL["delete_snapshot"](self, snapshot_id)


def _create_launch_template(
    self: Any, name: str, description: str, template_data: dict[str, Any], *args: Any, **kwargs: Any
) -> Any:
    """moto copies the tags of the launch template itself (TagSpecifications of CreateLaunchTemplate,
    resource type launch-template) into the template *data*; AWS does not, and Terraform's
    provider then sees a drift on every plan. Keep them out of the data."""
    specs = template_data.get("TagSpecifications")
    if specs:
        template_data = {
            **template_data,
            "TagSpecifications": [t for t in specs if t.get("ResourceType") != "launch-template"],
        }
    return _ORIGINAL["create_launch_template"](self, name, description, template_data, *args, **kwargs)


def _create_lt_version(self: Any, data: dict[str, Any], description: str) -> Any:
    """moto parses UserData into its Base64EncodedString only in CreateLaunchTemplate; a version
    made with CreateLaunchTemplateVersion (how Terraform updates a template) keeps the raw
    string, and moto's own launch path then fails an assertion. Parse it here too."""
    from moto.core.types import Base64EncodedString
    from moto.ec2.utils import parse_user_data

    user_data = data.get("UserData")
    if user_data is not None and not isinstance(user_data, Base64EncodedString):
        data = {**data, "UserData": parse_user_data(user_data) if user_data else None}
    return _ORIGINAL["create_lt_version"](self, data, description)


def install_fast_tags() -> None:
    if "describe_tags" not in _ORIGINAL:
        _ORIGINAL["describe_tags"] = _tags.TagBackend.describe_tags
        _tags.TagBackend.describe_tags = _fast_describe_tags  # type: ignore[method-assign]
    if "describe_images" not in _ORIGINAL:
        _ORIGINAL["describe_images"] = _amis.AmiBackend.describe_images
        _amis.AmiBackend.describe_images = _fast_describe_images  # type: ignore[method-assign]


def uninstall_fast_tags() -> None:
    """Only for the equality test: put moto's scan back."""
    if "describe_tags" in _ORIGINAL:
        _tags.TagBackend.describe_tags = _ORIGINAL.pop("describe_tags")  # type: ignore[method-assign]
    if "describe_images" in _ORIGINAL:
        _amis.AmiBackend.describe_images = _ORIGINAL.pop("describe_images")  # type: ignore[method-assign]


def install() -> None:
    install_fast_tags()
    from . import fast

    fast.install()  # compiled EC2 describe rendering + MaxResults paging (sandbox/aws/fast.py)
    if "block_device_mappings" not in _ORIGINAL:
        _ORIGINAL["block_device_mappings"] = _amis.Ami.block_device_mappings
        _amis.Ami.block_device_mappings = property(_ami_block_device_mappings)  # type: ignore[assignment]
    if "create_image" not in _ORIGINAL:
        _ORIGINAL["create_image"] = _amis.AmiBackend.create_image
        _amis.AmiBackend.create_image = _create_image  # type: ignore[method-assign]
    if "create_lt_version" not in _ORIGINAL:
        from moto.ec2.models import launch_templates as _ltm

        _ORIGINAL["create_lt_version"] = _ltm.LaunchTemplate.create_version
        _ltm.LaunchTemplate.create_version = _create_lt_version  # type: ignore[method-assign]
    if "create_launch_template" not in _ORIGINAL:
        from moto.ec2.models import launch_templates as _lt

        _ORIGINAL["create_launch_template"] = _lt.LaunchTemplateBackend.create_launch_template
        _lt.LaunchTemplateBackend.create_launch_template = _create_launch_template  # type: ignore[method-assign]
    if "delete_snapshot" not in _ORIGINAL:
        _ORIGINAL["delete_snapshot"] = _ebs.EBSBackend.delete_snapshot
        _ebs.EBSBackend.delete_snapshot = _delete_snapshot  # type: ignore[method-assign]
