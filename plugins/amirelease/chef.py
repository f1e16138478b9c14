"""What Chef is told about the release it builds: the node JSON (pure).

Packer's chef-solo provisioner hands chef-solo a node JSON; Packer 1.6 accepts only flat
string values in its `json` argument, so the pipeline writes the whole node JSON itself (a
shell provisioner decodes it from base64 onto the builder) and points chef-solo at it with
`-j`. The same on every Packer version and on both platforms.

The node JSON carries the run list, the release's identity under ``ami_release`` (the base
cookbook writes it to /etc/ami-release.json, C:\\ProgramData\\ami-release.json on Windows) and
the app's own attributes from its release definition, with ``<app>.version`` set to the
release's version. Never a secret: secrets reach Chef only through the data-bag secret file.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from amirelease.constants import CHEF_ATTRIBUTES

IDENTITY_PATH = {"linux": "/etc/ami-release.json", "windows": "C:\\ProgramData\\ami-release.json"}


def attribute_key(app: str) -> str:
    """The node attribute namespace of an app's cookbook: demo-web -> demo_web."""
    return app.replace("-", "_")


def identity(
    *,
    app: str,
    version: str,
    release_id: str,
    pipeline_run: str,
    source_ami: str,
    bundle_sha256: str,
    source: dict[str, Any] | None,
    re_release_of: str | None,
) -> dict[str, Any]:
    """What an instance says about the release it was built from (no secret, no credentials)."""
    return {
        "app": app,
        "version": version,
        "release_id": release_id,
        "pipeline_run": pipeline_run,
        "source_ami": source_ami,
        "bundle_sha256": bundle_sha256,
        "repository": (source or {}).get("repository"),
        "commit": (source or {}).get("commit"),
        "re_release_of": re_release_of,
    }


def node_json(
    *, app: str, version: str, run_list: list[str], attributes: dict[str, Any], release: dict[str, Any]
) -> dict[str, Any]:
    """The node JSON for chef-solo -j."""
    node = copy.deepcopy(attributes)
    own = node.setdefault(attribute_key(app), {})
    if not isinstance(own, dict):
        own = node[attribute_key(app)] = {}
    own["version"] = version
    node[CHEF_ATTRIBUTES] = dict(release)
    node["run_list"] = list(run_list)
    return node


def encoded(node: dict[str, Any]) -> str:
    """Canonical JSON text (sorted keys), as the template decodes it."""
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def identity_check_command(platform: str, release_id: str) -> tuple[str, str]:
    """(command, expected-output regex) that proves an instance runs the image of `release_id`."""
    path = IDENTITY_PATH[platform]
    run = f"cat {path}" if platform == "linux" else f"Get-Content -Raw '{path}'"
    return run, r'"release_id":\s*"' + re.escape(release_id) + '"'
