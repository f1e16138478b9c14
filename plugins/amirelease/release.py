"""Pure release logic: release ids, AMI names and the tags that are the release record on AWS."""

from __future__ import annotations

import hashlib
import re
from typing import Any

TAG_APP = "App"
TAG_VERSION = "Version"
TAG_RELEASE_ID = "ReleaseId"
TAG_SOURCE_AMI = "SourceAmi"
TAG_PLATFORM = "Platform"
TAG_RUN_LIST = "RunList"
TAG_RUN_LIST_DIGEST = "RunListDigest"
TAG_PIPELINE_RUN = "PipelineRun"
TAG_BUILT_BY = "BuiltBy"
TAG_RE_RELEASE_OF = "ReReleaseOf"
TAG_GIT_REF = "GitRef"
TAG_TEMPLATE_DIGEST = "PackerTemplateDigest"
TAG_STATUS = "ReleaseStatus"  # baked -> released | failed
TAG_PURPOSE = "Purpose"  # on instances we launch: ami-bake-builder | ami-smoke-test
BUILT_BY = "ami-release-pipeline"

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


def build_ami_tags(
    *,
    app: str,
    version: str,
    rid: str,
    source_ami: str,
    platform: str,
    run_list: list[str],
    pipeline_run: str,
    template_digest: str,
    git_ref: str | None = None,
    re_release_of: str | None = None,
) -> dict[str, str]:
    """The release record on the AMI. Built from non-secret inputs only (nothing from Vault)."""
    joined = " ".join(r.removeprefix("recipe[").removesuffix("]") for r in run_list)
    tags = {
        TAG_APP: app,
        TAG_VERSION: version,
        TAG_RELEASE_ID: rid,
        TAG_SOURCE_AMI: source_ami,
        TAG_PLATFORM: platform,
        TAG_RUN_LIST: joined if len(joined) <= 256 else f"sha256:{run_list_digest(run_list)}",
        TAG_RUN_LIST_DIGEST: run_list_digest(run_list),
        TAG_PIPELINE_RUN: pipeline_run,
        TAG_BUILT_BY: BUILT_BY,
        TAG_TEMPLATE_DIGEST: template_digest,
        TAG_STATUS: "baked",
        "Name": f"{app} {version}",
    }
    if git_ref:
        tags[TAG_GIT_REF] = git_ref
    if re_release_of:
        tags[TAG_RE_RELEASE_OF] = re_release_of
    return {k: tag_value(v) for k, v in tags.items()}


def newest_image(images: list[dict]) -> dict | None:
    return max(images, key=lambda i: i.get("CreationDate", ""), default=None)


def file_digest(*paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(open(p, "rb").read())
    return h.hexdigest()[:16]
