"""The provisioned bake for real: Packer's amazon-ebs source reaches the sandbox's builder over
SSH (sandbox/builders: Debian's OpenSSH server in a mount+PID namespace at the address the
sandbox reports as the instance's public IP), runs the shell provisioners, uploads the bundle's
cookbooks and calls chef-solo with the release's node JSON. chef-solo is a recorder there
(Chef Infra cannot be installed here): these tests read what it was given."""

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

SECRET_FILE = "/etc/chef/encrypted_data_bag_secret"


def test_a_release_bakes_through_ssh_and_chef_gets_the_release(release_env, vault_sandbox, monkeypatch, capfd, caplog):
    sb = release_env
    provisioned_settings(monkeypatch, sb)
    dr = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "6.1.0", "notes": "provisioned"})
    assert dr.state == "success", outcome(dr)
    logs = "".join(capfd.readouterr()) + caplog.text
    record = next(r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id)
    rid = record["release_id"]
    [ami] = run_images(sb, dr.run_id)

    state = builders(sb)
    [(instance_id, [run])] = list(state["chef_runs"].items())  # one builder, one Chef run
    # the run list: the base cookbook first, then the app's, exactly as the plan has it
    assert run["run_list"] == record["run_list"] and run["run_list"][0] == "recipe[linux-base]"
    assert run["run_list"][1].startswith("recipe[demo-web::default")
    # the node JSON carries the release: version (also as the app's attribute), release id, bundle
    node = run["node"]
    assert node["demo_web"]["version"] == "6.1.0"
    assert node["ami_release"]["release_id"] == rid and node["ami_release"]["version"] == "6.1.0"
    assert node["ami_release"]["bundle_sha256"] == record["bundle"]["sha256"]
    assert run["uid"] == 0 and "-j" in run["argv"]  # through sudo, with the node JSON file
    # the cookbooks chef-solo got are byte-for-byte the release bundle's
    _, _, s3 = clients(sb)
    store = bundle.BundleStore(s3, "ami-release-ledger-123456789012")
    with bundle.unpacked(store, record["bundle"]["key"], record["bundle"]["sha256"]) as root:
        expected, files = tree_digest(root / "cookbooks")
    [(path, uploaded)] = list(run["cookbooks"].items())
    assert uploaded["sha256"] == expected and uploaded["files"] == files and "linux-base/recipes/default.rb" in files
    # the data-bag secret was there for Chef, root's only, and is not in the image
    assert run["secret_file"] == {"present": True, "mode": "0o600", "uid": 0, "size": len("sandbox-databag-6f1c0e2b")}
    image = state["images"][ami["ImageId"]]
    assert image["instance"] == instance_id
    assert SECRET_FILE not in image["files"] and "/etc/chef/ami-release-node.json" not in image["files"]
    identity = json.loads(sb_image_file(sb, ami["ImageId"], "/etc/ami-release.json"))
    assert identity["release_id"] == rid and identity["version"] == "6.1.0"
    # the smoke test read that file on an instance of the new image and compared it with the release
    assert "the image is this release (identity file)" in logs
    # Packer really went over SSH and ran Chef; no secret in its output or the task log
    assert "packer | " in logs and "Provisioning with chef-solo" in logs
    for secret in vault_sandbox.seeded["ami-pipeline/demo-web/bake"].values():
        assert secret not in logs
    assert bake_leftovers(sb, rid) == NOTHING_LEFT


def sb_image_file(sb, image_id: str, path: str) -> str:
    from sandbox.aws.state import RUNTIME

    data = RUNTIME.builders.image_file(image_id, path)
    assert data is not None, f"{path} is not in image {image_id}"
    return data.decode()


def test_a_failing_chef_run_fails_the_bake_in_words_and_leaves_nothing(release_env, monkeypatch, capfd, caplog):
    sb = release_env
    provisioned_settings(monkeypatch, sb)
    sb.handle_control(
        "POST",
        "builders",
        {
            "chef_exit_code": 1,
            "chef_output": "Recipe: demo-web::default\nError executing action `start` on resource 'service[demo-web]'",
        },
    )
    dr = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "6.1.1", "notes": "chef fails"})
    assert dr.state == "failed"
    states = task_states(dr)
    bakes = {state for task, state in states.items() if task == "bake" or task.startswith("bake.")}
    assert "failed" in bakes and states.get("smoke_test") != "success", states
    logs = "".join(capfd.readouterr()) + caplog.text
    # Chef's last lines reach the task log, and the release fails with Packer's reason
    assert "Error executing action `start` on resource 'service[demo-web]'" in logs
    assert "ChildConvergeError" in logs
    assert "Packer failed for demo-web 6.1.1" in logs
    rid = next(r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id)["release_id"]
    assert run_images(sb, dr.run_id) == []
    assert bake_leftovers(sb, rid) == NOTHING_LEFT
