"""What the central catalog keeps and what an app's repository owns (pure: no git, no AWS)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from amirelease import catalog, chef
from amirelease.errors import ConfigError
from amirelease.operators.smoke import smoke_commands
from sandbox.gitsource import split_entry
from tests.conftest import REPO

ENTRY = yaml.safe_load((REPO / "include/apps/demo-web.yaml").read_text())
URL = "https://git.example.com/web/demo-web.git"


def test_a_split_entry_merges_back_into_the_same_app():
    central, definition = split_entry(copy.deepcopy(ENTRY), URL)
    assert set(central) <= set(catalog.CENTRAL_KEYS) | {"infrastructure"}
    assert set(definition) <= set(catalog.DEFINITION_KEYS)
    merged = catalog.merge_definition(central, definition, "demo-web.git: ami-release.yaml")
    expected = copy.deepcopy(ENTRY)
    expected["infrastructure"]["module"] = "project/terraform"
    assert merged == expected
    app = catalog.parse_app(merged, "demo-web (git)")
    assert app.run_list == ["recipe[linux-base]", "recipe[demo-web::default@2.3.1]"]
    assert app.infrastructure.allow_destroy == () and "ec2:CreateLaunchTemplate" in app.infrastructure.iam_actions


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda c, d: d.update(platform="windows"), "platform may only be set by the platform's central"),
        (lambda c, d: d.update(base_image={"owners": ["1"], "name": "x"}), "base_image may only be set"),
        (lambda c, d: d["infrastructure"].update(allow_destroy=["aws_lb"]), "infrastructure.allow_destroy may only"),
        (lambda c, d: d["infrastructure"].update(iam_actions=["iam:*"]), "infrastructure.iam_actions may only"),
        (lambda c, d: d.update(secrets=[{"path": "billing/db", "keys": ["pw"]}]), "outside the app's own Vault"),
        (
            lambda c, d: d["infrastructure"].update(secrets=[{"path": "demo-webx/x", "keys": ["k"]}]),
            "outside the app's own Vault",
        ),
        (lambda c, d: d["infrastructure"].update(module="../../other-app"), "leaves its folder"),
        (lambda c, d: d.update(owner="someone-else"), "owner may only be set"),
        (lambda c, d: d.update(colour="blue"), "unknown key(s) colour"),
    ],
)
def test_the_repository_cannot_set_what_the_platform_owns(change, needle):
    central, definition = split_entry(copy.deepcopy(ENTRY), URL)
    change(central, definition)
    with pytest.raises(ConfigError) as exc:
        catalog.merge_definition(central, definition, "demo-web.git: ami-release.yaml")
    assert needle in str(exc.value) and "Fix:" in str(exc.value)


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda c: c.update(cookbooks=["x"]), "cookbooks belong(s) to the app's own repository"),
        (lambda c: c["infrastructure"].update(module="terraform"), "infrastructure.module belong(s)"),
        (lambda c: c["source"].update(repository="https://bot:tok3n@git.example.com/a.git"), "password or token"),
        (lambda c: c["source"].update(repository="ext::sh -c id"), "not a repository URL"),
        (lambda c: c["source"].update(path="../up"), "leaves its folder"),
        (lambda c: c["source"].update(connection="bad id!"), "is not a connection id"),
        (lambda c: c["source"].update(branch="main"), "unknown key(s) branch"),
        (lambda c: c.pop("toolchain"), "'toolchain' is required"),
    ],
)
def test_a_central_entry_of_a_git_app_holds_central_keys_only(tmp_path, change, needle):
    central, _ = split_entry(copy.deepcopy(ENTRY), URL)
    change(central)
    path = tmp_path / "demo-web.yaml"
    path.write_text(yaml.safe_dump(central))
    with pytest.raises(ConfigError) as exc:
        catalog.load_entry(path)
    assert needle in str(exc.value)


def test_catalog_listings_know_git_apps_without_fetching_them(tmp_path):
    central, _ = split_entry(copy.deepcopy(ENTRY), URL)
    (tmp_path / "demo-web.yaml").write_text(yaml.safe_dump(central))
    entry = catalog.known_app("demo-web", tmp_path)
    assert entry.source == catalog.Source(repository=URL, path="deploy/ami", connection=None)
    assert catalog.load_catalog(tmp_path) == {}  # no whole definition in the catalog
    with pytest.raises(ConfigError, match="released from its git repository"):
        catalog.get_app("demo-web", tmp_path)


def test_the_node_json_carries_version_identity_and_attributes_but_no_secret():
    release = chef.identity(
        app="demo-web",
        version="1.2.0",
        release_id="demo-web-1.2.0-abc",
        pipeline_run="manual__x",
        source_ami="ami-1",
        bundle_sha256="f" * 64,
        source={"repository": URL, "commit": "a" * 40},
        re_release_of=None,
    )
    node = chef.node_json(
        app="demo-web",
        version="1.2.0",
        run_list=["recipe[linux-base]", "recipe[demo-web]"],
        attributes={"demo_web": {"workers": 4, "version": "0.0.1"}, "nginx": {"port": 80}},
        release=release,
    )
    assert node["demo_web"] == {"workers": 4, "version": "1.2.0"}  # the release's version wins
    assert node["nginx"] == {"port": 80}
    assert node["run_list"] == ["recipe[linux-base]", "recipe[demo-web]"]
    assert node["ami_release"]["commit"] == "a" * 40 and node["ami_release"]["release_id"] == "demo-web-1.2.0-abc"
    assert json.loads(chef.encoded(node)) == node


def test_the_smoke_test_checks_the_identity_file_only_when_chef_ran():
    app = catalog.get_app("demo-web")
    assert smoke_commands(app, "rid-1", provisioned=False) == list(app.smoke_commands)
    first, *rest = smoke_commands(app, "demo-web-1.2.0-abc", provisioned=True)
    assert rest == list(app.smoke_commands) and first.run == "cat /etc/ami-release.json"
    from amirelease.operators.smoke import check_invocation

    good = '{\n  "app": "demo-web",\n  "release_id": "demo-web-1.2.0-abc"\n}'
    assert check_invocation(first, "Success", 0, good) is None
    assert check_invocation(first, "Success", 0, good.replace("abc", "abd")) is not None
    assert check_invocation(first, "Success", 0, '"release_id": "demo-web-1.2.0-abcd"') is not None
