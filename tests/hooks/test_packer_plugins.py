"""Packer >= 1.7 gets a required_plugins file and `packer init`; Packer 1.6 gets neither."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from amirelease.errors import BakeError
from amirelease.hooks.packer import (
    DEFAULT_PLUGINS,
    PLUGINS_FILE,
    PackerHook,
    parse_packer_version,
    required_plugins_hcl,
)
from tests.conftest import REPO


def test_versions_are_read_from_packer_version_output():
    assert parse_packer_version("Packer v1.6.6\n") == (1, 6, 6)
    assert parse_packer_version("Packer v1.11.2\n\nYour version of Packer is out of date!") == (1, 11, 2)
    with pytest.raises(BakeError, match="cannot read Packer's version"):
        parse_packer_version("command not found")


def test_no_block_for_packer_1_6_and_one_per_plugin_from_1_7():
    assert required_plugins_hcl((1, 6, 6), DEFAULT_PLUGINS) is None
    text = required_plugins_hcl((1, 11, 2), DEFAULT_PLUGINS)
    assert text is not None and "required_plugins {" in text
    assert 'source  = "github.com/hashicorp/amazon"' in text and 'version = ">= 1.3.0"' in text
    assert 'source  = "github.com/hashicorp/chef"' in text
    assert required_plugins_hcl((1, 7, 0), {"amazon": "example.com/corp/amazon = 1.2.3"}) is not None
    with pytest.raises(BakeError, match="<source> <version constraint>"):
        required_plugins_hcl((1, 10, 0), {"amazon": "amazon"})


def test_the_installed_packer_1_6_rejects_the_block_so_it_is_never_written_for_it(tmp_path):
    """Why the gate exists, against the real binary: 1.6.6 refuses a required_plugins block."""
    version = PackerHook().version()
    if version >= (1, 7, 0):
        pytest.skip(f"this machine's Packer is {version}; the check is about 1.6")  # pragma: no cover
    shutil.copytree(REPO / "include" / "packer", tmp_path / "packer")
    (tmp_path / "packer" / PLUGINS_FILE).write_text(required_plugins_hcl((1, 10, 0), DEFAULT_PLUGINS) or "")
    out = subprocess.run(
        ["packer", "validate", "-syntax-only", str(tmp_path / "packer")], capture_output=True, text=True
    )
    assert out.returncode != 0 and "required_plugins" in out.stdout + out.stderr
