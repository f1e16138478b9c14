"""Describe calls as AWS limits and pages them, where moto does not (installed by fast.install()).

* **Filter value limit**: EC2 refuses a describe call whose filters carry more than 200
  values in all (``FilterLimitExceeded: The maximum number of filter values specified on
  a single call is 200``); moto accepts any number. Applied to ``DescribeImages`` and
  ``DescribeInstances``, the calls whose filters grow with the account.
* **DescribeLaunchTemplateVersions paging**: AWS pages the versions (``MaxResults``
  1-200, ``NextToken``), also in the "every launch template in the account" form
  (``Versions=['$Latest', '$Default']`` without a template id or name). moto cuts the
  answer at ``MaxResults`` (default 15) and never returns a ``NextToken``, so an account
  with more than 15 templates silently lost the rest. Here the whole answer is computed by
  moto and then paged; a token is the offset into it. Without ``MaxResults`` everything
  comes back in one response. ``stock_template_listing()`` answers as stock moto 5.2.5 does
  for as long as it is entered (tests run retention against both).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.core import responses as _core_responses
from moto.ec2.exceptions import EC2ClientError, InvalidNextToken, InvalidParameterValueError
from moto.ec2.responses import amis as _amis_responses
from moto.ec2.responses import instances as _instances_responses
from moto.ec2.responses import launch_templates as _lt_responses

MAX_FILTER_VALUES = 200
_ORIGINAL: dict[str, Any] = {}
_STOCK = {"template_listing": False}


class FilterLimitExceeded(EC2ClientError):
    def __init__(self) -> None:
        super().__init__(
            "FilterLimitExceeded",
            f"The maximum number of filter values specified on a single call is {MAX_FILTER_VALUES}",
        )


def _check_filter_values(response: Any) -> None:
    filters = response._filters_from_querystring()
    total = sum(len(values) if isinstance(values, list) else 1 for values in filters.values())
    if total > MAX_FILTER_VALUES:
        raise FilterLimitExceeded()


def _describe_images(self: Any) -> Any:
    _check_filter_values(self)
    return _ORIGINAL["describe_images"](self)


def _describe_instances(self: Any) -> Any:
    _check_filter_values(self)
    return _ORIGINAL["describe_instances"](self)


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def _decode(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return int(json.loads(raw)["offset"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidNextToken(token) from None


@contextmanager
def stock_template_listing() -> Iterator[None]:
    """While entered, DescribeLaunchTemplateVersions answers as stock moto 5.2.5: cut at
    ``MaxResults`` (default 15), never a ``NextToken``."""
    before = _STOCK["template_listing"]
    _STOCK["template_listing"] = True
    try:
        yield
    finally:
        _STOCK["template_listing"] = before


def _describe_launch_template_versions(self: Any) -> Any:
    if _STOCK["template_listing"]:
        return _ORIGINAL["describe_launch_template_versions"](self)
    raw_max = self._get_param("MaxResults")
    max_results = None
    if raw_max is not None:
        try:
            max_results = int(raw_max)
        except (TypeError, ValueError):
            raise InvalidParameterValueError(str(raw_max)) from None
        if not 1 <= max_results <= 200:
            raise InvalidParameterValueError(str(raw_max))
    token = self._get_param("NextToken")
    self.error_on_dryrun()
    pairs = self.ec2_backend.describe_launch_template_versions(
        template_name=self._get_param("LaunchTemplateName"),
        template_id=self._get_param("LaunchTemplateId"),
        versions=self._get_param("Versions", []),
        min_version=self._get_int_param("MinVersion"),
        max_version=self._get_int_param("MaxVersion"),
        max_results=10**9,  # everything; paged below
    )
    start = _decode(token) if token else 0
    end = len(pairs) if max_results is None else start + max_results
    page = pairs[start:end]
    result: dict[str, Any] = {
        "LaunchTemplateVersions": [
            {
                "CreateTime": version.create_time,
                "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                "DefaultVersion": template.is_default(version),
                "LaunchTemplateData": version.data,
                "LaunchTemplateId": template.id,
                "LaunchTemplateName": template.name,
                "VersionDescription": version.description,
                "VersionNumber": version.number,
            }
            for template, version in page
        ]
    }
    if end < len(pairs):
        result["NextToken"] = _encode(end)
    return _core_responses.ActionResult(result)


def install() -> None:
    """Idempotent; call after fast.install() (it wraps the fast describe handlers)."""
    if "describe_images" not in _ORIGINAL:
        _ORIGINAL["describe_images"] = _amis_responses.AmisResponse.describe_images
        _amis_responses.AmisResponse.describe_images = _describe_images  # type: ignore[method-assign]
    if "describe_instances" not in _ORIGINAL:
        _ORIGINAL["describe_instances"] = _instances_responses.InstanceResponse.describe_instances
        _instances_responses.InstanceResponse.describe_instances = _describe_instances  # type: ignore[method-assign]
    if "describe_launch_template_versions" not in _ORIGINAL:
        cls = _lt_responses.LaunchTemplates
        _ORIGINAL["describe_launch_template_versions"] = cls.describe_launch_template_versions
        cls.describe_launch_template_versions = _describe_launch_template_versions  # type: ignore[method-assign]
