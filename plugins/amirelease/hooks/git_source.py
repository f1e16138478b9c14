"""An app's AMI project in git: resolve a ref to one commit, export one folder of that commit.

Credentials come only from an Airflow connection of type ``git`` (the git provider's
``GitHook``: repository URL, token or SSH key): the hook hands them to git through a credential
helper or ``GIT_SSH_COMMAND`` with a key file in a private temp folder, never in argv, never
in a URL we log. URLs we show are stripped of any ``user:password@``.

What is fetched is the least that gives the tree: ``git ls-remote`` to resolve the ref, then
one commit at depth 1 without blobs (``--filter=blob:none`` where the server supports it) and
a sparse checkout of the project folder, so a large history or a big monorepo costs little.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk.log import mask_secret

from amirelease.errors import PreflightError

FULL_SHA_RE = re.compile(r"[0-9a-f]{40}", re.ASCII)
SHORT_SHA_RE = re.compile(r"[0-9a-f]{7,39}", re.ASCII)
GIT_TIMEOUT_SECONDS = 120
# Transports a catalog entry may name. ext:: (runs a command) and the like stay refused.
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"


def display_url(url: str) -> str:
    """The repository URL without credentials: safe for logs, tags, the ledger and the page."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username and not parts.password and parts.scheme == "ssh":
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class ResolvedRef:
    ref: str
    commit: str
    kind: str  # "tag", "branch" or "commit"


def pick_ref(ref: str, advertised: Mapping[str, str], url: str) -> ResolvedRef:
    """Resolve `ref` among `advertised` (ls-remote: ref name -> object id). Pure, for unit tests.

    A tag is peeled to its commit. A name that is both a tag and a branch on different commits
    is ambiguous and refused; a full 40-hex commit is taken as given (the fetch proves it
    exists); an abbreviated commit cannot be resolved remotely and is refused with the fix.
    """
    shown = display_url(url)
    if FULL_SHA_RE.fullmatch(ref):
        return ResolvedRef(ref, ref, "commit")
    tag = advertised.get(f"refs/tags/{ref}^{{}}") or advertised.get(f"refs/tags/{ref}")
    branch = advertised.get(f"refs/heads/{ref}")
    if ref.startswith("refs/"):
        exact = advertised.get(f"{ref}^{{}}") or advertised.get(ref)
        if exact:
            return ResolvedRef(ref, exact, "tag" if ref.startswith("refs/tags/") else "branch")
    if tag and branch and tag != branch:
        raise PreflightError(
            f"git ref '{ref}' is both a tag ({tag[:12]}) and a branch ({branch[:12]}) in {shown}",
            fix=f"say which: refs/tags/{ref} or refs/heads/{ref}, or give the full commit",
        )
    if tag:
        return ResolvedRef(ref, tag, "tag")
    if branch:
        return ResolvedRef(ref, branch, "branch")
    if SHORT_SHA_RE.fullmatch(ref):
        raise PreflightError(
            f"git ref '{ref}' looks like an abbreviated commit; a remote repository cannot resolve those ({shown})",
            fix="give the full 40-character commit id (git rev-parse <ref>), or a tag or branch",
        )
    raise PreflightError(
        f"git ref '{ref}' is neither a tag nor a branch of {shown}",
        fix="push the tag (git push origin <tag>) or correct git_ref; "
        "`git ls-remote <repository>` lists what the server has",
    )


def _classify(stderr: str, url: str) -> tuple[str, str]:
    """A git failure in words: (problem, fix)."""
    text = stderr.lower()
    shown = display_url(url)
    if any(
        s in text
        for s in (
            "authentication failed",
            "permission denied",
            "could not read username",
            "invalid username or password",
            "403",
        )
    ):
        return (
            f"the git server refused the credentials for {shown}",
            "check the token or SSH key in the app's git connection (and that it may read this repository)",
        )
    if any(
        s in text
        for s in (
            "does not appear to be a git repository",
            "repository not found",
            "not found",
            "no such file",
        )
    ):
        return (
            f"no git repository at {shown}",
            "correct source.repository in the app's central catalog entry",
        )
    if any(
        s in text
        for s in (
            "could not resolve host",
            "connection refused",
            "timed out",
            "unable to access",
            "network is unreachable",
        )
    ):
        return (
            f"the git server of {shown} cannot be reached",
            "check the URL, DNS and the worker's network path to the git server, then retry",
        )
    if "not our ref" in text or "upload-pack: not our ref" in text or "couldn't find remote ref" in text:
        return (
            f"the commit is not on any branch or tag of {shown}",
            "push the commit, or release a tag or branch that contains it",
        )
    last = stderr.strip().splitlines()[-1:] or ["(no message)"]
    return f"git failed for {shown}: {last[0]}", "see the task log; check the repository and the git connection"


class AppSourceHook:
    """git against one repository, with the credentials of an optional Airflow git connection."""

    def __init__(self, repository: str, git_conn_id: str | None = None) -> None:
        self.repository = repository
        self.git_conn_id = git_conn_id

    @contextmanager
    def _env(self) -> Iterator[tuple[str, dict[str, str]]]:
        """(URL to hand git, environment) with the connection's credentials configured."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        base.update(
            {
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_ASKPASS": "/bin/false",
                "SSH_ASKPASS": "/bin/false",
                "LC_ALL": "C",
            }
        )
        if not self.git_conn_id:
            yield self.repository, base
            return
        from airflow.providers.git.hooks.git import GitHook

        try:
            hook: Any = GitHook(git_conn_id=self.git_conn_id, repo_url=self.repository)
        except Exception as exc:  # noqa: BLE001 - the provider raises AirflowNotFoundException, ValueError, OSError
            raise PreflightError(
                f"the git connection '{self.git_conn_id}' cannot be used: {type(exc).__name__}: {exc}",
                fix="create it (Admin > Connections, type git) or correct source.connection in the central catalog",
            ) from None
        if hook.auth_token:
            mask_secret(hook.auth_token)
        if hook.private_key:
            mask_secret(hook.private_key)
        with hook.configure_hook_env():
            env = dict(base)
            env.update({k: v for k, v in os.environ.items() if k.startswith(("GIT_CONFIG_", "AIRFLOW_GIT_"))})
            env.update(hook.env)
            env["GIT_TERMINAL_PROMPT"] = "0"
            yield str(hook.repo_url), env

    def _git(self, args: list[str], env: dict[str, str], url: str, cwd: Path | None = None) -> str:
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PreflightError(
                f"git did not answer within {GIT_TIMEOUT_SECONDS} s for {display_url(url)}",
                fix="check the worker's network path to the git server, then retry",
            ) from None
        if proc.returncode != 0:
            problem, fix = _classify(proc.stderr, url)
            raise PreflightError(problem, fix=fix)
        return proc.stdout

    def resolve(self, ref: str) -> ResolvedRef:
        """The commit `ref` names on the server, before anything is fetched or created."""
        with self._env() as (url, env):
            out = self._git(["ls-remote", "--", url], env, url)
        advertised = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if FULL_SHA_RE.fullmatch(sha) and name:
                advertised[name] = sha
        return pick_ref(ref, advertised, self.repository)

    def export(self, commit: str, subdir: str, dest: Path) -> list[str]:
        """Copy `subdir` of `commit` into `dest` (created); returns the files, relative to dest."""
        if not FULL_SHA_RE.fullmatch(commit):
            raise PreflightError(f"'{commit}' is not a full commit id", fix="resolve the ref first")
        sub = PurePosixPath(subdir or ".")
        if sub.is_absolute() or ".." in sub.parts:
            raise PreflightError(
                f"source.path '{subdir}' leaves the repository",
                fix="give a folder inside the repository, e.g. deploy/ami",
            )
        with self._env() as (url, env), tempfile.TemporaryDirectory(prefix="amirelease-git-") as tmp:
            work = Path(tmp)
            self._git(["init", "-q", "--initial-branch=source", "."], env, url, cwd=work)
            self._git(["remote", "add", "origin", url], env, url, cwd=work)
            self._git(
                ["-c", "protocol.version=2", "fetch", "-q", "--depth", "1", "--no-tags", "--filter=blob:none"]
                + ["origin", commit],
                env,
                url,
                cwd=work,
            )
            if str(sub) != ".":
                self._git(["sparse-checkout", "set", "--no-cone", f"/{sub.as_posix()}/"], env, url, cwd=work)
            self._git(["-c", "advice.detachedHead=false", "checkout", "-q", commit], env, url, cwd=work)
            src = work / sub
            if not src.is_dir():
                raise PreflightError(
                    f"commit {commit[:12]} of {display_url(self.repository)} has no folder '{subdir}'",
                    fix="correct source.path in the central catalog entry, or release a commit that has the folder",
                )
            files = []
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(src)
                if ".git" in rel.parts:
                    continue
                if path.is_symlink():
                    raise PreflightError(
                        f"{subdir}/{rel.as_posix()} at {commit[:12]} is a symbolic link",
                        fix="replace the link with the file itself: a release bundle holds plain files only",
                    )
                if path.is_file():
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                    files.append(rel.as_posix())
            return files
