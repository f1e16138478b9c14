"""Windows images baked for real through the same SSH builder as Linux: Packer's SSH
communicator reaches the sandbox's Windows-shaped builder (sandbox/builders/windows.py: Debian's
OpenSSH server, Administrator's key in administrators_authorized_keys, a C: drive), uploads its
PowerShell scripts and the cookbooks over SCP, and the builder's shell records each script, the
chef-solo.bat call and Sysprep (Windows cannot run here; see docs/sandbox.md)."""

from __future__ import annotations

import json

import pytest

from amirelease import bundle
from sandbox.builders.chef_solo_recorder import tree_digest
from tests.conftest import provisioned_settings
from tests.release.conftest import (
    NOTHING_LEFT,
    bake_leftovers,
    builders,
    clients,
    ledger_records,
    load_dag,
    outcome,
    run_images,
    task_states,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("provisioned")]

SECRET = "C:/chef/encrypted_data_bag_secret"
NODE = "C:/chef/ami-release-node.json"
SSH_KEY = "C:/ProgramData/ssh/administrators_authorized_keys"
DRIVE = "/winroot/C:"


def _release(sb, version: str, capfd, caplog):
    dr = load_dag("ami_release").test(run_conf={"app": "demo-win", "version": version, "notes": "windows"})
    logs = "".join(capfd.readouterr()) + caplog.text
    rid = next(r for r in ledger_records(sb, "demo-win") if r["pipeline_run"] == dr.run_id)["release_id"]
    return dr, logs, rid


def test_demo_win_release_bakes_through_ssh_with_sysprep_last(release_env, vault_sandbox, monkeypatch, capfd, caplog):
    sb = release_env
    provisioned_settings(monkeypatch, sb)
    dr, logs, rid = _release(sb, "1.2.0", capfd, caplog)
    assert dr.state == "success", outcome(dr)
    record = next(r for r in ledger_records(sb, "demo-win") if r["pipeline_run"] == dr.run_id)
    [ami] = run_images(sb, dr.run_id)
    state = builders(sb)
    [(instance_id, steps)] = list(state["windows_steps"].items())
    [run] = state["chef_runs"][instance_id]

    # windows-base first, then the app's; the node JSON carries version, release id and bundle
    assert run["run_list"] == record["run_list"] == ["recipe[windows-base]", "recipe[demo-win::default]"]
    assert run["node"]["demo_win"]["version"] == "1.2.0"
    assert run["node"]["ami_release"]["release_id"] == rid
    assert run["node"]["ami_release"]["bundle_sha256"] == record["bundle"]["sha256"]
    assert run["argv"][:3] == ["--no-color", "-c", "C:/Windows/Temp/packer-chef-solo/solo.rb"]
    # the cookbooks chef-solo.bat got over SCP are byte-for-byte the bundle's
    _, _, s3 = clients(sb)
    with bundle.unpacked(bundle.BundleStore(s3, "ami-release-ledger-123456789012"), **_ref(record)) as root:
        expected, files = tree_digest(root / "cookbooks")
    [uploaded] = run["cookbooks"].values()
    assert uploaded["sha256"] == expected and uploaded["files"] == files and "windows-base/recipes/default.rb" in files

    # the order: secret written with its ACL -> Chef (secret there) -> secret, node JSON, SSH key
    # gone -> Sysprep, and nothing of ours after it (only Packer's removal of its own script files)
    kinds = [s["kind"] for s in steps if s["kind"] != "scp"]
    assert (
        kinds[:2] == ["powershell", "powershell"] and "chef-solo" in kinds and kinds[-2:] == ["sysprep", "powershell"]
    )
    chef = next(s for s in steps if s["kind"] == "chef-solo")
    assert chef["state"][SECRET] == {"present": True, "acl": "/inheritance:r /grant:r SYSTEM:F Administrators:F"}
    assert run["secret_file"]["present"] and run["secret_file"]["acl"].startswith("/inheritance:r")
    sysprep = next(s for s in steps if s["kind"] == "sysprep")
    assert sysprep["args"] == "--shutdown=false"
    assert not any(sysprep["state"][p]["present"] for p in (SECRET, NODE, SSH_KEY)), sysprep["state"]
    after = steps[steps.index(sysprep) + 1 :]
    assert all(s["kind"] == "scp" or "packer-cleanup" in s["script"] for s in after), after
    # every script recorded names its variables, never their values
    secrets = vault_sandbox.seeded["ami-pipeline/demo-win/bake"].values()
    for secret in secrets:
        assert secret not in json.dumps(steps) and secret not in logs
    first = next(s for s in steps if s["kind"] == "powershell")
    assert "CHEF_DATABAG_SECRET" in first["variables"] and "$Env:CHEF_DATABAG_SECRET" in first["script"]

    # the image: identity file in, secret, node JSON, Chef's staging folder and SSH key out
    image = state["images"][ami["ImageId"]]
    assert f"{DRIVE}/chef/encrypted_data_bag_secret" not in image["files"]
    assert f"{DRIVE}/chef/ami-release-node.json" not in image["files"]
    assert not any(p.startswith(f"{DRIVE}/Windows/Temp/packer-chef-solo") for p in image["files"])
    assert f"{DRIVE}/ProgramData/ssh/administrators_authorized_keys" in image["removed"]
    from sandbox.aws.state import RUNTIME

    identity = json.loads(RUNTIME.builders.image_file(ami["ImageId"], "C:\\ProgramData\\ami-release.json"))
    assert identity["release_id"] == rid and identity["version"] == "1.2.0"
    assert "the image is this release (identity file)" in logs  # the smoke test read it (Get-Content)
    assert "Connected to SSH!" in logs and "Executing Chef: c:/opscode/chef/bin/chef-solo.bat" in logs
    assert bake_leftovers(sb, rid) == NOTHING_LEFT


def _ref(record: dict) -> dict:
    return {"key": record["bundle"]["key"], "sha256": record["bundle"]["sha256"]}


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            {"chef_exit_code": 1, "chef_output": "Recipe: demo-win::default\n  * windows_feature[IIS] action install"},
            "Error executing Chef",
        ),
        (
            {"sysprep_exit_code": 1, "sysprep_output": "Sysprep: Windows could not finish configuring the system"},
            "Script exited with non-zero exit status",
        ),
    ],
    ids=["chef-solo fails", "sysprep fails"],
)
def test_a_failing_windows_step_fails_the_bake_in_words_and_leaves_nothing(
    release_env, monkeypatch, capfd, caplog, answer, words
):
    sb = release_env
    provisioned_settings(monkeypatch, sb)
    sb.handle_control("POST", "builders", answer)
    dr, logs, rid = _release(sb, "1.2.1", capfd, caplog)
    assert dr.state == "failed"
    bakes = {s for task, s in task_states(dr).items() if task == "bake" or task.startswith("bake.")}
    assert "failed" in bakes
    last_lines = answer.get("chef_output") or answer["sysprep_output"]
    assert last_lines.splitlines()[-1] in logs and words in logs  # the step's own last lines in the task log
    assert run_images(sb, dr.run_id) == []
    assert bake_leftovers(sb, rid) == NOTHING_LEFT
