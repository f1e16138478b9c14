"""Pure release logic: release ids, AMI names and the tags that are the release record on AWS."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from amirelease.constants import (
    BUILT_BY,
    TAG_APP,
    TAG_BUILT_BY,
    TAG_BUNDLE_DIGEST,
    TAG_GIT_REF,
    TAG_NAME,
    TAG_PIPELINE_RUN,
    TAG_PLATFORM,
    TAG_RE_RELEASE_OF,
    TAG_REBUILD_OF,
    TAG_RELEASE_ID,
    TAG_RUN_LIST,
    TAG_RUN_LIST_DIGEST,
    TAG_SOURCE_AMI,
    TAG_SOURCE_COMMIT,
    TAG_SOURCE_REPOSITORY,
    TAG_STATUS,
    TAG_TEMPLATE_DIGEST,
    TAG_VERSION,
)

if TYPE_CHECKING:
    from amirelease.handoffs import ReleasePlan

ImageT = TypeVar("ImageT", bound=Mapping[str, Any])  # a DescribeImages item, typed or not

_TAG_VALUE_RE = re.compile(r"[^\w\s.:/=+\-@]")


def release_id(app: str, version: str, run_id: str) -> str:
    """Stable for every try of one DAG run (so a retry finds its AMI), unique across runs."""
    digest = hashlib.sha256(f"{app}|{version}|{run_id}".encode()).hexdigest()[:12]
    return f"{app}-{version}-{digest}"


def ami_name(app: str, version: str, rid: str) -> str:
    # AMI names: 3-128 chars of letters, numbers, ()[] ./-'@_ ; unique per account and region.
    return f"{app}-{version}-{rid.rsplit('-', 1)[-1]}"[:128]


def tag_value(value: Any) -> str:
    """AWS tag values: at most 256 chars of a restricted set."""
    return _TAG_VALUE_RE.sub("_", str(value))[:256]


def run_list_digest(run_list: list[str]) -> str:
    return hashlib.sha256("\n".join(run_list).encode()).hexdigest()[:16]


def build_ami_tags(plan: ReleasePlan) -> dict[str, str]:
    """The release record on the AMI. Built from the plan only (nothing from Vault)."""
    joined = " ".join(r.removeprefix("recipe[").removesuffix("]") for r in plan.run_list)
    tags = {
        TAG_APP: plan.app,
        TAG_VERSION: plan.version,
        TAG_RELEASE_ID: plan.release_id,
        TAG_SOURCE_AMI: plan.source_ami,
        TAG_PLATFORM: plan.platform,
        TAG_RUN_LIST: joined if len(joined) <= 256 else f"sha256:{run_list_digest(list(plan.run_list))}",
        TAG_RUN_LIST_DIGEST: run_list_digest(list(plan.run_list)),
        TAG_PIPELINE_RUN: plan.pipeline_run,
        TAG_BUILT_BY: BUILT_BY,
        TAG_TEMPLATE_DIGEST: plan.packer_template_digest,
        TAG_BUNDLE_DIGEST: plan.bundle.sha256[:32],
        TAG_STATUS: "baked",
        TAG_NAME: f"{plan.app} {plan.version}",
    }
    if plan.git_ref:
        tags[TAG_GIT_REF] = plan.git_ref
    if plan.source:
        tags[TAG_SOURCE_REPOSITORY] = plan.source["repository"]
        tags[TAG_SOURCE_COMMIT] = plan.source["commit"]
    if plan.re_release_of:
        tags[TAG_RE_RELEASE_OF] = plan.re_release_of
    if plan.rebuild_of:
        tags[TAG_REBUILD_OF] = plan.rebuild_of
    return {k: tag_value(v) for k, v in tags.items()}


def newest_image(images: Sequence[ImageT]) -> ImageT | None:
    return max(images, key=lambda i: str(i.get("CreationDate", "")), default=None)


def files_digest(paths: list[Path]) -> str:
    """A short digest over the files' names and contents (e.g. the Packer files of a build)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]
