"""Bad input is refused before any AWS change, with a message that names the problem and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import ParamValidationError

from tests.conftest import REPO
from tests.release.conftest import load_dag, mutations, task_states

pytestmark = pytest.mark.e2e

GOOD = {"app": "demo-web", "version": "2.0.0"}


@pytest.mark.parametrize(
    "conf",
    [
        {"app": "demo-web", "version": "v2.0.0"},  # prefix
        {"app": "demo-web", "version": "2.0"},  # two parts
        {"app": "demo-web", "version": ""},  # empty
        {"app": "demo-web", "version": "2.0.0; rm -rf /"},  # injection
        {"app": "demo-web", "version": "02.0.0"},  # leading zero
        {"app": "demo-web", "version": "2.0.0-" + "a" * 60},  # too long
        {"app": "demo-web", "version": 2},  # not a string
        {"app": "no-such-app", "version": "2.0.0"},  # unknown app
        {"app": None, "version": "2.0.0"},  # no app
        {**GOOD, "git_ref": "main branch"},  # space in git ref
        {**GOOD, "notes": "x" * 501},  # notes too long
        {"app": "demo-web", "version": "2.0.0\n"},  # a trailing newline ($ in Python lets it through)
        {"app": "demo-web", "version": "2.\u0663.0"},  # an Arabic-Indic digit (\\d in Python lets it through)
        {**GOOD, "git_ref": "v1\n"},  # a trailing newline in the git ref
    ],
    ids=[
        "v-prefix",
        "two-parts",
        "empty",
        "injection",
        "leading-zero",
        "too-long",
        "number",
        "unknown-app",
        "null-app",
        "git-ref-space",
        "long-notes",
        "trailing-newline",
        "non-ascii-digit",
        "git-ref-newline",
    ],
)
def test_trigger_params_are_refused(release_env, conf):
    dag = load_dag()
    with pytest.raises(ParamValidationError):
        dag.test(run_conf=conf)
    assert mutations(release_env) == {}


def _catalog(tmp_path: Path, **changes) -> Path:
    """A copy of include/ whose demo-web entry has the given changes; returns the copy."""
    root = tmp_path / "include"
    shutil.copytree(REPO / "include", root)
    data = yaml.safe_load((REPO / "include/apps/demo-web.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(leaf) if leaf.isdigit() else leaf] = value
    (root / "apps" / "demo-web.yaml").write_text(yaml.safe_dump(data))
    return root


CASES = {
    "wrong-launch-template": (
        {"targets.0.launch_template": "other-lt"},
        None,
        "uses launch template 'demo-web', not 'other-lt'",
        "point targets[].launch_template",
    ),
    "missing-vpc": (
        {"network.vpc": "no-such-vpc"},
        None,
        "no VPC(s) named 'no-such-vpc' in us-east-1",
        "tag exactly one",
    ),
    "missing-subnet": ({"network.subnets": ["demo-a", "demo-z"]}, None, "subnet(s) demo-z not found", "create them"),
    "missing-terraform-secret": (
        # a key the module declares, at a Vault path that exists but does not hold it
        {"infrastructure.secrets": [{"path": "demo-web/bake", "keys": ["api_token"]}]},
        None,
        "Vault secret 'ami-pipeline/demo-web/bake' lacks key(s) api_token",
        "add the key",
    ),
    "secret-the-module-does-not-declare": (
        {"infrastructure.secrets": [{"path": "demo-web/runtime", "keys": ["db_password"]}]},
        None,
        "the Terraform module terraform/demo-web declares no variable for db_password",
        "add a `variable` block",
    ),
    "missing-module": (
        {"infrastructure.module": "terraform/no-such-module"},
        None,
        "infrastructure.module 'terraform/no-such-module' is not a Terraform module folder",
        "point it at a folder",
    ),
    "missing-vault-secret": (
        {"secrets": [{"path": "demo-web/nope", "keys": ["x"]}]},
        None,
        "Vault secret 'ami-pipeline/demo-web/nope' needed by app 'demo-web' does not exist",
        "write it",
    ),
    "secret-of-another-app": (  # the `intruder` pattern: another app's Vault folder
        {"infrastructure.secrets": [{"path": "demo-win/bake", "keys": ["chef_data_bag_secret"]}]},
        None,
        "infrastructure.secrets path 'demo-win/bake' is outside the app's own Vault folder 'demo-web/'",
        "another app's secrets are not its to read",
    ),
    "secret-path-climbs-out": (
        {"secrets": [{"path": "demo-web/../demo-win/bake", "keys": ["chef_data_bag_secret"]}]},
        None,
        "is outside the app's own Vault folder",
        "keep the app's secrets under demo-web/",
    ),
    "missing-secret-key": (
        {"secrets": [{"path": "demo-web/bake", "keys": ["db_password"]}]},
        None,
        "lacks key(s) db_password",
        "add the key",
    ),
    "no-base-image": (
        {"base_image.name": "ubuntu-*"},
        None,
        "no available base image named 'ubuntu-*'",
        "correct base_image",
    ),
    "own-base-image": (
        {"base_image.owners": ["123456789012"]},
        None,
        "base_image.owners includes this account",
        "vendor base image",
    ),
    "bad-platform": ({"platform": "solaris"}, None, "platform: 'solaris' is not one of", "correct the field"),
    "base-cookbook-listed": (
        {"cookbooks": ["linux-base", "demo-web::default"]},
        None,
        "cookbook 'linux-base' is a platform base cookbook",
        "remove it",
    ),
    "no-ledger-bucket": (
        {},
        "no-such-ledger-bucket",
        "release ledger bucket 'no-such-ledger-bucket' is not reachable",
        "create the bucket",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_deeper_problems_fail_preflight_and_change_nothing(release_env, tmp_path, monkeypatch, case):
    changes, bucket, problem, fix = CASES[case]
    if case == "wrong-launch-template":
        release_env.create_fleet("demo-web")  # a group that uses another template than the catalog says
        release_env.reset_request_counts()
    monkeypatch.setenv("AMI_RELEASE_INCLUDE_DIR", str(_catalog(tmp_path, **changes)))
    if bucket:
        monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", bucket)
    dag = load_dag()
    dr = dag.test(run_conf=GOOD)
    states = task_states(dr)
    assert dr.state == "failed" and states["preflight"] == "failed", states
    assert states["release_lock"] == "upstream_failed" and states["record"] == "upstream_failed"
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        msg = session.query(XComModel).filter_by(run_id=dr.run_id, task_id="preflight", key="failure").one().value
    assert problem in msg and "Fix:" in msg and fix in msg, msg
    assert mutations(release_env) == {}, "preflight must not change anything in AWS"


def test_rollback_without_an_earlier_release_is_refused_and_changes_nothing(release_env):
    sb = release_env
    rb = load_dag("ami_rollback").test(run_conf={"app": "demo-web", "reason": "nothing to go back to, on purpose"})
    states = task_states(rb)
    assert rb.state == "failed" and states["preflight"] == "failed", states
    assert states["record"] == "upstream_failed" and states["release_lock"] == "upstream_failed"
    assert mutations(sb) == {}
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        msg = session.query(XComModel).filter_by(run_id=rb.run_id, task_id="preflight", key="failure").one().value
    assert "no earlier good release to roll back to" in msg and "release a fixed version" in msg


GIT_TOKEN = "glpat-wrong-T0KEN-0815"
GIT_CASES = {
    "no-git-ref": (None, "v1", "a release needs a git_ref", "give the tag, branch or full commit"),
    "unknown-tag": ("v9", "v1", "git ref 'v9' is neither a tag nor a branch", "push the tag"),
    "unreachable-repository": ("v1", "gone", "no git repository at file://", "correct source.repository"),
    "bad-credentials": ("v1", "http", "the git server refused the credentials", "check the token or SSH key"),
    "repo-sets-a-central-key": ("v1", "platform", "platform may only be set by the platform's central", "ask the"),
    "no-definition-at-path": ("v1", "nodef", "has no deploy/ami/ami-release.yaml", "add the app's release"),
    "malformed-definition": ("v1", "badyaml", "not valid YAML", "push a new commit"),
}


@pytest.mark.parametrize("case", list(GIT_CASES), ids=list(GIT_CASES))
def test_git_source_problems_fail_preflight_and_change_nothing(release_env, tmp_path, monkeypatch, capfd, case):
    """A git-sourced app: bad refs, unreachable repositories, bad credentials and a definition
    that oversteps the central catalog are refused in preflight, in words, with no AWS change and
    no credential anywhere."""
    import subprocess

    from sandbox.gitsource import make_project_repo
    from tests.hooks.git_http import GitHttpServer

    ref, variant, problem, fix = GIT_CASES[case]
    apps = tmp_path / "apps"
    repo = make_project_repo(tmp_path / "git", REPO / "include", "demo-web", apps)
    if variant == "platform":
        repo.write_definition({**repo.definition(), "platform": "windows"})
    elif variant == "nodef":
        (repo.project / "ami-release.yaml").unlink()
    elif variant == "badyaml":
        (repo.project / "ami-release.yaml").write_text("cookbooks: [unclosed\n")
    repo.commit("the change under test")
    repo.tag("v1")
    entry = apps / "demo-web.yaml"
    if variant == "gone":
        entry.write_text(entry.read_text().replace(repo.url, "file:///nonexistent/demo-web.git"))
    monkeypatch.setenv("AMI_RELEASE_APPS_DIR", str(apps))
    conf = {**GOOD, **({"git_ref": ref} if ref else {})}
    server = None
    if variant == "http":
        bare = tmp_path / "srv" / "demo-web.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
        server = GitHttpServer(bare.parent, "web-team", "the-right-token").__enter__()
        url = f"{server.base}/demo-web.git"
        central = yaml.safe_load(entry.read_text())
        central["source"].update(repository=url, connection="git_demo_web")
        entry.write_text(yaml.safe_dump(central))
        import json

        monkeypatch.setenv(
            "AIRFLOW_CONN_GIT_DEMO_WEB",
            json.dumps({"conn_type": "git", "host": url, "login": "web-team", "password": GIT_TOKEN}),
        )
    try:
        dr = load_dag().test(run_conf=conf)
    finally:
        if server:
            server.__exit__(None, None, None)
    states = task_states(dr)
    assert dr.state == "failed" and states["preflight"] == "failed", states
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        msg = session.query(XComModel).filter_by(run_id=dr.run_id, task_id="preflight", key="failure").one().value
    assert problem in msg and "Fix:" in msg and fix in msg, msg
    assert mutations(release_env) == {}, "preflight must not change anything in AWS"
    out, err = capfd.readouterr()
    assert GIT_TOKEN not in msg + out + err


def test_a_module_that_runs_code_on_the_worker_is_refused_in_preflight(release_env, tmp_path, monkeypatch):
    """An app's module with local-exec (code with the worker's reach) is refused before anything
    is created, unless the central entry allows it."""
    root = _catalog(tmp_path)
    main = root / "terraform" / "demo-web" / "main.tf"
    main.write_text(
        main.read_text() + '\nresource "terraform_data" "loot" {\n  provisioner "local-exec" {\n'
        '    command = "env > /tmp/loot"\n  }\n}\n'
    )
    monkeypatch.setenv("AMI_RELEASE_INCLUDE_DIR", str(root))
    dr = load_dag().test(run_conf=GOOD)
    states = task_states(dr)
    assert dr.state == "failed" and states["preflight"] == "failed", states
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        msg = session.query(XComModel).filter_by(run_id=dr.run_id, task_id="preflight", key="failure").one().value
    assert "may not run code on the worker" in msg and "terraform_data.loot" in msg and "allow:" in msg, msg
    assert mutations(release_env) == {}
