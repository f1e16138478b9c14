"""A git-sourced app's release inputs: resolve the ref once (preflight), then build the bundle
from that commit, wherever it is needed (preflight, and the Terraform check that stores it).

The commit is pinned in the release plan's ``source``: building again gives the same bytes
(bundles are deterministic), so a worker proves it has the inputs preflight saw by the digest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from amirelease import bundle, catalog
from amirelease.errors import ConfigError
from amirelease.hooks.git_source import AppSourceHook, display_url

log = logging.getLogger(__name__)


def _hook(entry: catalog.Entry) -> AppSourceHook:
    if entry.source is None:
        raise ConfigError(f"app '{entry.name}' has no git source", fix="this is a bug: report it")
    return AppSourceHook(entry.source.repository, entry.source.connection)


def resolve(entry: catalog.Entry, git_ref: str | None) -> dict[str, Any]:
    """The release's source: repository (no credentials), path, ref, its kind and the commit."""
    assert entry.source is not None
    shown = display_url(entry.source.repository)
    if not git_ref:
        raise ConfigError(
            f"{entry.name} is released from its git repository {shown}: a release needs a git_ref",
            fix="give the tag, branch or full commit to release in git_ref, e.g. v1.4.2",
        )
    resolved = _hook(entry).resolve(git_ref)
    return {
        "repository": shown,
        "path": entry.source.path,
        "ref": git_ref,
        "ref_kind": resolved.kind,
        "commit": resolved.commit,
    }


def build(entry: catalog.Entry, source: dict[str, Any], tmp: Path) -> tuple[catalog.App, Path, bundle.Bundle]:
    """Export the commit's project folder, stage the bundle folder, pack it: (app, folder, bundle)."""
    assert entry.source is not None
    project = tmp / "project"
    files = _hook(entry).export(source["commit"], entry.source.path, project)
    log.info("Fetched %d file(s) of commit %s only (depth 1, folder %s)", len(files), source["commit"], source["path"])
    stage = tmp / "bundle"
    stage.mkdir()
    app, entry_file = bundle.stage_git_project(entry, project, stage, source)
    return app, stage, bundle.pack(bundle.members(app, stage, entry_file))
