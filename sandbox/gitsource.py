"""A local git repository holding an app's AMI project, as an app team would keep it.

`make demo` and the tests use it to release demo-web from git instead of from include/: the
app's release definition (ami-release.yaml), its cookbooks and its Terraform module are
committed under deploy/ami/ of a repository made here, and an overlay catalog folder holds the
central entry (the platform's part, with ``source:`` naming the repository). No git server:
git's file:// transport is a real remote (ls-remote, shallow fetch) all the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from amirelease.catalog import CENTRAL_KEYS, PLATFORM_INFRASTRUCTURE_KEYS

PROJECT_PATH = "deploy/ami"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "demo-web team",
    "GIT_AUTHOR_EMAIL": "web-team@example.com",
    "GIT_COMMITTER_NAME": "demo-web team",
    "GIT_COMMITTER_EMAIL": "web-team@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def split_entry(entry: dict[str, Any], repository: str, path: str = PROJECT_PATH) -> tuple[dict, dict]:
    """(central entry, app definition) of a whole embedded catalog entry."""
    central = {k: entry[k] for k in CENTRAL_KEYS if k in entry}
    central["source"] = {"repository": repository, "path": path}
    infra = dict(entry.get("infrastructure", {}))
    central["infrastructure"] = {k: infra.pop(k) for k in PLATFORM_INFRASTRUCTURE_KEYS if k in infra}
    infra["module"] = "terraform"
    definition = {k: v for k, v in entry.items() if k not in CENTRAL_KEYS and k != "infrastructure"}
    definition["infrastructure"] = infra
    return central, definition


@dataclass
class ProjectRepo:
    """A working repository at `path`; releases fetch it through `url`."""

    path: Path
    app: str

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    @property
    def project(self) -> Path:
        return self.path / PROJECT_PATH

    def git(self, *args: str) -> str:
        env = {**os.environ, **_GIT_ENV}
        return subprocess.run(
            ["git", *args], cwd=self.path, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, *, force: bool = False) -> None:
        self.git("tag", *(["-f"] if force else []), "-a", name, "-m", f"release {name}")

    def definition(self) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load((self.project / "ami-release.yaml").read_text())
        return data

    def write_definition(self, data: dict[str, Any]) -> None:
        (self.project / "ami-release.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def make_project_repo(dest: Path, include: Path, app: str, apps_dir: Path) -> ProjectRepo:
    """Move `app` of the checkout `include` into a new git repository at dest/<app>.git and
    write its central entry into `apps_dir` (the overlay catalog). Commits once (no tag)."""
    entry = yaml.safe_load((include / "apps" / f"{app}.yaml").read_text())
    repo = ProjectRepo(dest / f"{app}.git", app)
    if repo.path.exists():
        shutil.rmtree(repo.path)
    repo.path.mkdir(parents=True)
    repo.git("init", "-q", "--initial-branch=main")
    central, definition = split_entry(entry, repo.url)
    module = include / entry["infrastructure"]["module"]
    shutil.copytree(module, repo.project / "terraform", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    for cookbook in entry["cookbooks"]:
        name = cookbook.split("@", 1)[0].split("::", 1)[0]
        shutil.copytree(include / "cookbooks" / name, repo.project / "cookbooks" / name)
    repo.write_definition(definition)
    (repo.path / "README.md").write_text(f"# {app}\n\nThe AMI project is in {PROJECT_PATH}/.\n")
    repo.commit(f"{app}: AMI project")
    apps_dir.mkdir(parents=True, exist_ok=True)
    (apps_dir / f"{app}.yaml").write_text(
        f"# {app}: the platform's entry; the release definition lives in {repo.url} ({PROJECT_PATH})\n"
        + yaml.safe_dump(central, sort_keys=False)
    )
    return repo
