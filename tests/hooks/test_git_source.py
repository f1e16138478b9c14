"""The app-source hook against real git: file:// remotes and a smart-HTTP server with auth."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from amirelease.errors import PreflightError
from amirelease.hooks.git_source import AppSourceHook, display_url, pick_ref
from tests.hooks.git_http import GitHttpServer

TOKEN = "glpat-s3cr3t-T0KEN-4711"
ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **ENV}, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """main: two commits; tag v1 (lightweight) on the first, v2 (annotated) on the second, a
    branch and a tag both named `same` on different commits."""
    path = tmp_path / "app.git"
    path.mkdir()
    git(path, "init", "-q", "--initial-branch=main")
    (path / "deploy" / "ami").mkdir(parents=True)
    (path / "deploy" / "ami" / "file.txt").write_text("one\n")
    (path / "elsewhere.txt").write_text("not part of the project\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    git(path, "tag", "v1")
    (path / "deploy" / "ami" / "file.txt").write_text("two\n")
    git(path, "commit", "-q", "-am", "two")
    git(path, "tag", "-a", "v2", "-m", "v2")
    git(path, "tag", "same", "v1")
    git(path, "branch", "same")
    return path


def test_refs_resolve_to_the_commit_they_name(repo):
    hook = AppSourceHook(f"file://{repo}")
    first = git(repo, "rev-parse", "v1^{commit}")
    second = git(repo, "rev-parse", "v2^{commit}")
    assert (hook.resolve("v1").commit, hook.resolve("v1").kind) == (first, "tag")
    assert hook.resolve("v2").commit == second  # an annotated tag is peeled to its commit
    assert (hook.resolve("main").commit, hook.resolve("main").kind) == (second, "branch")
    assert hook.resolve(first).commit == first  # a full commit is taken as given
    assert hook.resolve("refs/tags/same").commit == first and hook.resolve("refs/heads/same").commit == second


@pytest.mark.parametrize(
    "ref,needle",
    [
        ("v9", "neither a tag nor a branch"),
        ("same", "both a tag"),
        ("3f9c2ab", "abbreviated commit"),
    ],
)
def test_bad_refs_are_refused_in_words(repo, ref, needle):
    with pytest.raises(PreflightError) as exc:
        AppSourceHook(f"file://{repo}").resolve(ref)
    assert needle in str(exc.value) and "Fix:" in str(exc.value)


def test_export_copies_one_folder_of_exactly_that_commit(repo, tmp_path):
    hook = AppSourceHook(f"file://{repo}")
    files = hook.export(hook.resolve("v1").commit, "deploy/ami", tmp_path / "out")
    assert files == ["file.txt"]
    assert (tmp_path / "out" / "file.txt").read_text() == "one\n"  # v1's content, not main's
    assert not (tmp_path / "out" / "elsewhere.txt").exists()
    with pytest.raises(PreflightError, match="has no folder 'nope'"):
        hook.export(hook.resolve("v1").commit, "nope", tmp_path / "none")
    with pytest.raises(PreflightError, match="leaves the repository"):
        hook.export(hook.resolve("v1").commit, "../x", tmp_path / "none")
    unknown = "0" * 40
    with pytest.raises(PreflightError) as exc:
        hook.export(unknown, "deploy/ami", tmp_path / "none")
    assert "Fix:" in str(exc.value)


@pytest.mark.parametrize(
    "url,needle",
    [
        ("file:///nonexistent/app.git", "no git repository"),
        ("http://127.0.0.1:9/app.git", "cannot be reached"),
        ("ext::sh -c touch% /tmp/pwned", "failed"),  # a transport that runs commands stays refused
    ],
)
def test_unreachable_repositories_are_refused_in_words(url, needle):
    with pytest.raises(PreflightError) as exc:
        AppSourceHook(url).resolve("v1")
    assert needle in str(exc.value)
    assert not Path("/tmp/pwned").exists()


@pytest.fixture
def git_argv_log(tmp_path, monkeypatch) -> Path:
    """Every git command line the hook runs, recorded by a `git` in front of the real one."""
    real = shutil.which("git")
    log = tmp_path / "argv.log"
    shim = tmp_path / "bin" / "git"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    return log


def _connection(monkeypatch, conn_id: str, url: str, token: str) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "git", "host": url, "login": "tester", "password": token}),
    )


def test_a_token_reaches_git_only_through_the_connection(repo, tmp_path, monkeypatch, git_argv_log, capfd):
    bare = tmp_path / "srv" / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    with GitHttpServer(bare.parent, "tester", TOKEN) as srv:
        url = f"{srv.base}/app.git"
        _connection(monkeypatch, "git_app", url, TOKEN)
        hook = AppSourceHook(url, "git_app")
        commit = hook.resolve("v2").commit
        assert hook.export(commit, "deploy/ami", tmp_path / "out") == ["file.txt"]
        assert (tmp_path / "out" / "file.txt").read_text() == "two\n"
        assert any(a.startswith("Basic ") for a in srv.seen_auth if a == srv.expected)  # the header carried it

        argv = git_argv_log.read_text()
        assert "ls-remote" in argv and "fetch" in argv
        assert TOKEN not in argv  # never on a command line
        assert TOKEN not in "".join(capfd.readouterr())

        _connection(monkeypatch, "git_bad", url, "wrong-token")
        with pytest.raises(PreflightError) as exc:
            AppSourceHook(url, "git_bad").resolve("v2")
        assert "refused the credentials" in str(exc.value) and "wrong-token" not in str(exc.value)
        with pytest.raises(PreflightError) as exc:
            AppSourceHook(url).resolve("v2")  # no connection at all: no prompt, a refusal in words
        assert "refused the credentials" in str(exc.value)
    with pytest.raises(PreflightError, match="cannot be used"):
        AppSourceHook(url, "git_missing").resolve("v2")


def test_pick_ref_and_display_url_are_pure():
    adv = {"refs/tags/a": "1" * 40, "refs/tags/a^{}": "2" * 40, "refs/heads/b": "3" * 40}
    assert pick_ref("a", adv, "x").commit == "2" * 40
    assert pick_ref("b", adv, "x").kind == "branch"
    assert display_url("https://user:tok@git.example.com:8443/a/b.git") == "https://git.example.com:8443/a/b.git"
    assert display_url("ssh://git@git.example.com/a/b.git") == "ssh://git@git.example.com/a/b.git"
    assert display_url("git@github.com:a/b.git") == "git@github.com:a/b.git"
