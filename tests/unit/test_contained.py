"""An app's Terraform module is checked before init: what it may not do, refused in words."""

from __future__ import annotations

import json

import pytest

from amirelease.contained import Allowances, check_module, violations
from amirelease.errors import ConfigError
from tests.conftest import REPO

CASES = {
    "local-exec": (
        'resource "terraform_data" "x" {\n  provisioner "local-exec" { command = "env" }\n}\n',
        "runs a 'local-exec' provisioner",
    ),
    "remote-exec": (
        'resource "aws_instance" "x" {\n  provisioner "remote-exec" { inline = ["id"] }\n}\n',
        "runs a 'remote-exec' provisioner",
    ),
    "external": ('data "external" "x" { program = ["sh", "-c", "env"] }\n', "data source 'external'"),
    "remote-state": (
        'data "terraform_remote_state" "other" {\n  backend = "s3"\n  config = { key = "x" }\n}\n',
        "reads another Terraform state",
    ),
    "null-provider": ('resource "null_resource" "x" {}\n', "needs provider hashicorp/null"),
    "required-provider": (
        'terraform {\n  required_providers {\n    evil = { source = "example.com/evil/evil" }\n  }\n}\n',
        "requires provider example.com/evil/evil",
    ),
    "own-backend": ('terraform {\n  backend "local" {}\n}\n', "declares backend 'local'"),
    "remote-module": ('module "m" { source = "git::https://example.com/m.git" }\n', "module m comes from"),
    "module-climbs-out": ('module "m" { source = "../other-app" }\n', "module m comes from '../other-app'"),
    "file-outside": ('locals { k = file("/etc/passwd") }\n', "file() reads a file outside the module"),
    "file-climbs": ('locals { k = file("${path.module}/../../secrets.txt") }\n', "climbs out of the module"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_what_an_app_module_may_not_do(tmp_path, case):
    text, needle = CASES[case]
    (tmp_path / "extra.tf").write_text(text)
    found = violations(tmp_path)
    assert any(needle in v for v in found), found
    with pytest.raises(ConfigError) as exc:
        check_module(tmp_path, "intruder")
    assert "Fix:" in str(exc.value) and "allow:" in str(exc.value)


def test_the_shipped_modules_are_contained():
    for app in ("demo-web", "demo-win"):
        assert violations(REPO / "include" / "terraform" / app) == []


def test_the_central_entry_can_allow_what_the_platform_agreed_to(tmp_path):
    (tmp_path / "main.tf").write_text(CASES["local-exec"][0] + CASES["external"][0] + CASES["null-provider"][0])
    assert len(violations(tmp_path)) == 3
    allow = Allowances.from_entry(
        {"allow": {"provisioners": ["local-exec"], "data_sources": ["external"], "providers": ["hashicorp/null"]}}
    )
    assert violations(tmp_path, allow) == []


def test_json_modules_and_local_modules(tmp_path):
    (tmp_path / "main.tf.json").write_text(
        json.dumps({"resource": {"terraform_data": {"x": {"provisioner": [{"local-exec": {"command": "id"}}]}}}})
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "main.tf").write_text('resource "aws_s3_bucket" "b" {}\n')
    (tmp_path / "uses.tf").write_text('module "sub" { source = "./sub" }\n')
    assert violations(tmp_path) == [
        "main.tf.json: resource terraform_data.x runs a 'local-exec' provisioner (code on the worker)"
    ]


def test_unparseable_hcl_is_refused_in_words(tmp_path):
    (tmp_path / "main.tf").write_text('resource "aws_s3_bucket" {{{\n')
    with pytest.raises(ConfigError, match="not valid Terraform"):
        violations(tmp_path)
