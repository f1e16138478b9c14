"""PackerHook against real Packer and the sandbox: an interrupt tears the builder down."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from amirelease.hooks.packer import PackerHook
from tests.release.conftest import clients, running_instances


def test_interrupt_makes_packer_terminate_its_builder(sandbox):
    ec2, _, _ = clients(sandbox)
    hook = PackerHook(interrupt_grace=60)
    result: dict = {}
    lines: list[str] = []
    variables = {
        "region": "us-east-1",
        "ec2_endpoint": sandbox.endpoint_url,
        "source_ami": sandbox.account["vendor_images"]["amazon-linux"],
        "run_tags": {"Purpose": "ami-bake-builder", "ReleaseId": "interrupt-test"},
        # our own group, as the bake task passes one: Packer then makes none of its own
        "security_group_id": ec2.create_security_group(GroupName="interrupt-test", Description="test")["GroupId"],
    }
    aws_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    t = threading.Thread(
        target=lambda: result.update(
            r=hook.build(
                Path(__file__).with_name("slow.pkr.hcl"),
                variables,
                secrets={"k": "sandbox-interrupt-secret"},
                aws_env=aws_env,
                on_line=lines.append,
            )
        )
    )
    t.start()
    deadline = time.monotonic() + 60
    while not running_instances(sandbox, "ami-bake-builder"):
        assert time.monotonic() < deadline, lines[-20:]
        time.sleep(0.2)
    assert running_instances(sandbox, "ami-bake-builder")
    hook.interrupt()  # what on_kill does
    t.join(timeout=90)
    assert not t.is_alive()
    res = result["r"]
    assert res.returncode != 0 and res.artifacts == {}
    assert running_instances(sandbox, "ami-bake-builder") == []  # Packer cleaned up after SIGINT
    assert not [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("packer_")]
    assert not [k for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("packer_")]
    assert not any("sandbox-interrupt-secret" in line for line in lines)


def test_missing_binary_is_a_clear_error():
    from amirelease.errors import BakeError

    with pytest.raises(BakeError, match="packer binary 'no-such-packer' not found"):
        PackerHook(packer_bin="no-such-packer").binary()


NASTY = {
    "controls": "bell \b formfeed \f soh \x01 del \x7f tab \t newline \n cr \r",
    "quotes": "double \" single ' backslash \\ and \\n literally",
    "templates": "${var.x} %{ if true }y%{ endif } $${z} %%{w}",
    "unicode": "é ☃ 𝄞 🚀",
}


def test_secrets_reach_packer_exactly():
    """A Vault value with \\b or \\f broke the bake (JSON escapes HCL does not have). Every value
    must reach Packer as it is in Vault: control characters, quotes, backslashes, templates, unicode."""
    import base64
    import json

    lines: list[str] = []
    res = PackerHook().build(Path(__file__).with_name("roundtrip.pkr.hcl"), {}, secrets=NASTY, on_line=lines.append)
    assert res.returncode == 0, lines[-20:]
    [encoded] = [line.split("SECRETS_B64=", 1)[1].split()[0] for line in lines if "SECRETS_B64=" in line]
    assert json.loads(base64.b64decode(encoded)) == NASTY


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_the_shipped_packer_files_validate(platform, tmp_path):
    """What a bake loads (the shared variables + the platform's template + its folder) is valid
    for real Packer, with the variables the bake task passes."""
    import json
    import os
    import shutil
    import subprocess

    from amirelease import catalog

    for rel in catalog.packer_files(platform):
        src = catalog.include_dir() / rel
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / Path(rel).relative_to("packer"))
    var_file = tmp_path / "v.pkrvars.json"
    var_file.write_text(
        json.dumps(
            {
                "region": "us-east-1",
                "source_ami": "ami-0a11a2023b0000002",
                "ami_name": "demo-1.0.0-abc",
                "instance_type": "t3.micro",
                "security_group_id": "sg-1",
                "temporary_key_pair_name": "packer-r",
                "tags": {"App": "demo"},
                "run_tags": {"App": "demo"},
                "run_list": ["recipe[linux-base]"],
                "cookbooks_dir": str(tmp_path),
                "app_version": "1.0.0",
            }
        )
    )
    out = subprocess.run(
        ["packer", "validate", f"-var-file={var_file}", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
