"""This worker's Terraform folders (hooks/terraform.py TerraformHook.workspace): one per app,
region, bundle and state backend. Two accounts or endpoints served by one worker (two
deployments, two sandboxes) never share a folder, an initialised backend or a saved plan, and a
folder prepared again for other module bytes keeps no plan saved for the old ones. Real files,
no Terraform run (the folder's bookkeeping is what is under test)."""

from __future__ import annotations

import json

import pytest

from amirelease.hooks.terraform import Backend, TerraformHook, workspace_key
from amirelease.operators.infrastructure import _saved_plan_is

BUNDLE = "ab" * 32


@pytest.fixture
def module(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__TERRAFORM_WORKSPACE_DIR", str(tmp_path / "workspaces"))
    src = tmp_path / "module"
    src.mkdir()
    (src / "main.tf").write_text('output "x" {\n  value = 1\n}\n')
    return src


def _backend(endpoint: str | None, bucket: str = "ledger-a") -> Backend:
    return Backend(bucket=bucket, key="terraform/demo-web/us-east-1/terraform.tfstate", region="us-east-1",
                   endpoint_url=endpoint)  # fmt: skip


def _save_plan(folder, key: str, body: bytes) -> None:
    (folder / "release.tfplan").write_bytes(body)
    (folder / ".planned").write_text(json.dumps({"key": key, "summary": {}}))


def test_two_endpoints_or_accounts_never_share_a_folder(module):
    a, b = _backend("http://127.0.0.1:5001"), _backend("http://127.0.0.1:5002")
    other_account = _backend("http://127.0.0.1:5001", bucket="ledger-b")
    keys = {workspace_key("demo-web", "us-east-1", BUNDLE, x) for x in (a, b, other_account)}
    assert len(keys) == 3, keys
    # the same release inputs against the same backend: the same folder (the check's init is reused)
    assert workspace_key("demo-web", "us-east-1", BUNDLE, a) == workspace_key(
        "demo-web", "us-east-1", BUNDLE, _backend(a.endpoint_url)
    )

    hook = TerraformHook()
    key_a, key_b = (workspace_key("demo-web", "us-east-1", BUNDLE, x) for x in (a, b))
    with hook.workspace(module, key_a, a.endpoint_url) as ws_a:
        (ws_a.path / "data").mkdir()  # what terraform init leaves
        ws_a.mark_initialised(a)
        _save_plan(ws_a.path, "plan-of-a", b"A")
    with hook.workspace(module, key_b, b.endpoint_url) as ws_b:  # the other sandbox's release
        assert ws_b.path != ws_a.path and not ws_b.reused and not ws_b.initialised_for(b)
        _save_plan(ws_b.path, "plan-of-b", b"B")
    with hook.workspace(module, key_a, a.endpoint_url) as again:  # a's apply, after b planned
        assert again.reused and again.initialised_for(a)
        assert _saved_plan_is(again.path, "plan-of-a") and (again.path / "release.tfplan").read_bytes() == b"A"
        assert b.endpoint_url not in (again.module / "zz_pipeline_override.tf").read_text()


def test_a_folder_prepared_again_keeps_no_saved_plan(module):
    backend = _backend("http://127.0.0.1:5001")
    key = workspace_key("demo-web", "us-east-1", BUNDLE, backend)
    hook = TerraformHook()
    with hook.workspace(module, key, backend.endpoint_url) as ws:
        _save_plan(ws.path, "plan-1", b"1")
        assert _saved_plan_is(ws.path, "plan-1") and not _saved_plan_is(ws.path, "plan-2")
    (module / "main.tf").write_text('output "x" {\n  value = 2\n}\n')  # other bytes: prepared again
    with hook.workspace(module, key, backend.endpoint_url) as ws:
        assert not ws.reused
        assert not (ws.path / "release.tfplan").exists() and not _saved_plan_is(ws.path, "plan-1")


def test_an_init_runs_alone_on_the_shared_provider_cache_and_other_commands_side_by_side(module, tmp_path):
    """Terraform's plugin cache is not safe while an init fills it: one worker's inits wait for
    every other command on its workspaces, and those wait for an init (one flock, shared/exclusive)."""
    import fcntl
    import threading

    from amirelease.hooks.terraform import provider_cache_lock, workspace_root

    root = workspace_root()
    (root / "plugins").mkdir(parents=True)
    env = {"TF_DATA_DIR": str(root / "demo-web-us-east-1-x" / "data")}
    probe = open(root / "plugins.lock", "a")  # another process's view: its own open file
    try:
        with provider_cache_lock(env, exclusive=False):  # a plan: another plan gets in, an init does not
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with provider_cache_lock(env, exclusive=True), pytest.raises(BlockingIOError):  # an init: nobody else
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        # a real terraform command waits while an init holds the cache
        fcntl.flock(probe, fcntl.LOCK_EX)
        ran = threading.Thread(target=lambda: TerraformHook().run(["version"], cwd=module, env=env, on_line=print))
        ran.start()
        ran.join(timeout=3)
        assert ran.is_alive(), "terraform ran while another process's init held the provider cache"
        fcntl.flock(probe, fcntl.LOCK_UN)
        ran.join(timeout=60)
        assert not ran.is_alive()
    finally:
        probe.close()
