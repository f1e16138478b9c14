"""How the bake reaches its builder: [ami_release] packer_source(_<platform>) and builder_*."""

from __future__ import annotations

import pytest

from amirelease.errors import BakeError
from amirelease.operators.bake import builder_settings, packer_source


def test_defaults_reach_the_builder_inside_the_vpc(monkeypatch):
    for key in ("PACKER_SOURCE", "PACKER_SOURCE_WINDOWS", "BUILDER_SSH_INTERFACE", "BUILDER_PUBLIC_IP"):
        monkeypatch.delenv(f"AIRFLOW__AMI_RELEASE__{key}", raising=False)
    assert packer_source("linux") == packer_source("windows") == "provisioned"
    assert builder_settings() == {
        "ssh_interface": "private_ip",  # matches the default ingress (the VPC's CIDR)
        "associate_public_ip_address": False,
        "ssh_timeout": "10m",
        "chef_skip_install": False,
    }


def test_one_platform_can_build_without_a_communicator(monkeypatch):
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__PACKER_SOURCE", "provisioned")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__PACKER_SOURCE_WINDOWS", "unprovisioned")
    assert packer_source("linux") == "provisioned" and packer_source("windows") == "unprovisioned"


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("PACKER_SOURCE_WINDOWS", "winrm", "packer_source (or packer_source_windows) = 'winrm' is not valid"),
        ("BUILDER_SSH_INTERFACE", "public", "builder_ssh_interface = 'public' is not valid"),
    ],
)
def test_a_typo_is_refused_in_words(monkeypatch, key, value, words):
    monkeypatch.setenv(f"AIRFLOW__AMI_RELEASE__{key}", value)
    with pytest.raises(BakeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        packer_source("windows")
        builder_settings()
