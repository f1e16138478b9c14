"""TerraformHook with real Terraform: secrets reach it exactly, an interrupt releases the state
lock, and Terraform dies with its task (kill -9) without leaving the lock behind. The modules
here use no provider (fast); the S3 backend and its lock live in the sandbox."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amirelease.handoffs import PlanSummary, ResourceChange
from amirelease.hooks.terraform import Backend, TerraformHook, TerraformRun, destroys
from amirelease.hooks.tool import workdir
from tests.conftest import REPO

HERE = Path(__file__).with_name("tf")
LEDGER = "ami-release-ledger-123456789012"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}

NASTY = [
    "plain",
    'quotes " and \\ backslashes \\n (literal)',
    "controls \b \f \x01 \x7f \t tab\nnewline\r\n",
    "templates ${var.x} %{ if true }x%{ endif } $${x}",
    "unicode é ☃ 𝄞 and emoji 🚀",
    "-leading-dash --and=equals",
]


def _tf(sb=None):
    hook = TerraformHook()
    lines: list[str] = []
    return hook, lines


@pytest.mark.parametrize("value", NASTY, ids=range(len(NASTY)))
def test_a_secret_reaches_terraform_exactly(value):
    hook, lines = _tf()
    with workdir("terraform") as wd:
        module = hook.prepare(HERE / "roundtrip", wd, None)
        env = hook.environment(wd, AWS_ENV, {"secret": value})
        assert hook.init(module, None, env, lines.append).returncode == 0, lines
        var_file = wd / "v.json"
        var_file.write_text("{}")
        plan = hook.plan(module, var_file, env, lines.append, out=wd / "p.tfplan", lock=False)
        assert plan.returncode == 0, lines
        run = hook.apply(module, wd / "p.tfplan", env, lines.append)
        assert run.returncode == 0, lines
    assert base64.b64decode(run.outputs["secret_b64"]).decode() == value
    assert not [line for line in lines if value.strip() and value in line]  # never printed


def test_a_nul_in_a_secret_is_refused_with_the_reason():
    from amirelease.errors import InfrastructureError

    with workdir("terraform") as wd, pytest.raises(InfrastructureError, match="NUL character"):
        TerraformHook().environment(wd, AWS_ENV, {"secret": "a\x00b"})


def test_plan_messages_and_the_destroy_guard():
    """Terraform's -json messages become the plan summary; destroys and replacements of types
    the catalog does not allow are what the guard refuses."""
    hook = TerraformHook()
    run = TerraformRun(returncode=0, interrupted=False)
    said: list[str] = []
    for msg in [
        {
            "type": "planned_change",
            "change": {
                "resource": {"addr": "aws_launch_template.web", "resource_type": "aws_launch_template"},
                "action": "update",
            },
        },
        {
            "type": "planned_change",
            "change": {
                "resource": {"addr": "aws_autoscaling_group.web", "resource_type": "aws_autoscaling_group"},
                "action": "replace",
            },
        },
        {
            "type": "planned_change",
            "change": {
                "resource": {"addr": "aws_cloudwatch_metric_alarm.old", "resource_type": "aws_cloudwatch_metric_alarm"},
                "action": "delete",
            },
        },
        {
            "type": "change_summary",
            "@message": "Plan: 1 to add, 1 to change, 2 to destroy.",
            "changes": {"add": 1, "change": 1, "remove": 2},
        },
        {
            "type": "diagnostic",
            "diagnostic": {
                "severity": "error",
                "summary": "Unsupported argument",
                "detail": 'An argument named "imge_id" is not expected here.',
                "range": {"filename": "main.tf", "start": {"line": 12}},
            },
        },
    ]:
        hook._handle(json.dumps(msg), run, said.append)
    summary = run.plan_summary()
    assert (summary.add, summary.change, summary.destroy) == (1, 1, 2)
    assert "  -/+ aws_autoscaling_group.web (replace)" in said
    assert str(run.errors[0]) == 'Unsupported argument (main.tf:12): An argument named "imge_id" is not expected here.'
    bad = destroys(summary, allowed_types=("aws_cloudwatch_metric_alarm",))
    assert [c.address for c in bad] == ["aws_autoscaling_group.web"]
    assert destroys(PlanSummary(0, 1, 0, (ResourceChange("a.b", "a", "update"),)), ()) == []


# --- the state lock ------------------------------------------------------------------------------


def _lock_key(key: str) -> str:
    return f"{key}.tflock"


def _exists(sb, key: str) -> bool:
    return any(o["Key"] == key for o in sb.client("s3").list_objects_v2(Bucket=LEDGER).get("Contents", []))


def _slow_module(sb, wd: Path, key: str, lines: list[str]):
    hook = TerraformHook(interrupt_grace=30)
    module = hook.prepare(HERE / "slow", wd, sb.endpoint_url)
    env = hook.environment(wd, AWS_ENV)
    backend = Backend(bucket=LEDGER, key=key, region="us-east-1", endpoint_url=sb.endpoint_url)
    assert hook.init(module, backend, env, lines.append).returncode == 0, lines
    return hook, module, env


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_locked_state_is_waited_for_and_an_interrupt_releases_the_lock(sandbox):
    """While an apply holds the state lock, a second plan waits its lock timeout and reports the
    holder's lock ID; interrupting the apply releases the lock and a retry converges."""
    key = "terraform/test/interrupt.tfstate"
    lines: list[str] = []
    with workdir("terraform") as wd:
        hook, module, env = _slow_module(sandbox, wd, key, lines)
        var_file = wd / "v.json"
        var_file.write_text(json.dumps({"seconds": 120, "run": "1"}))
        result: dict = {}
        t = threading.Thread(
            target=lambda: result.update(
                run=hook.plan(module, var_file, env, lines.append, out=wd / "p")
                and hook.apply(module, wd / "p", env, lines.append)
            )
        )
        t.start()
        _wait_for(
            lambda: any("$ terraform apply" in line for line in lines) and _exists(sandbox, _lock_key(key)),
            90,
            f"apply never started: {lines[-10:]}",
        )  # Terraform holds the state lock while it applies
        time.sleep(2)  # well into the 120 s provisioner
        # a second run on the same state meanwhile: it waits lock_timeout, then says who holds it
        held = json.loads(sandbox.client("s3").get_object(Bucket=LEDGER, Key=_lock_key(key))["Body"].read())
        with workdir("terraform") as wd2:
            other_lines: list[str] = []
            other, module2, env2 = _slow_module(sandbox, wd2, key, other_lines)
            (wd2 / "v.json").write_text(json.dumps({"seconds": 0, "run": "2"}))
            waited = time.monotonic()
            second = other.plan(module2, wd2 / "v.json", env2, other_lines.append, lock_timeout=3)
            waited = time.monotonic() - waited
        assert second.returncode != 0 and second.lock_id == held["ID"], other_lines[-10:]
        assert waited >= 3, f"the second plan gave up after {waited:.1f}s, before its lock timeout"
        assert t.is_alive() and _exists(sandbox, _lock_key(key)), "the first apply must keep its lock"
        hook.interrupt()  # what on_kill does: SIGINT, then SIGKILL after the grace period
        t.join(timeout=60)
        assert not t.is_alive()
        assert result["run"].returncode != 0
        assert not _exists(sandbox, _lock_key(key)), "an interrupted Terraform must release its state lock"
        # the retry: a new plan and apply on the same state, which nobody holds
        var_file.write_text(json.dumps({"seconds": 0, "run": "1"}))
        plan = hook.plan(module, var_file, env, lines.append, out=wd / "p2", lock_timeout=5)
        assert plan.returncode == 0 and not plan.lock_id, lines[-20:]
        assert hook.apply(module, wd / "p2", env, lines.append).returncode == 0, lines[-20:]
        again = hook.plan(module, var_file, env, lines.append, lock_timeout=5)
        assert again.plan_summary().line() == "0 to add, 0 to change, 0 to destroy"  # converged: no changes


KILLED = """
import json, sys
sys.path[:0] = [{plugins!r}, {repo!r}]
from pathlib import Path
from amirelease.hooks.terraform import Backend, TerraformHook
hook = TerraformHook()
wd = Path({wd!r})
module = hook.prepare(Path({module!r}), wd, {endpoint!r})
env = hook.environment(wd, {aws!r})
backend = Backend(bucket={bucket!r}, key={key!r}, region="us-east-1", endpoint_url={endpoint!r})
say = lambda line: print(line, flush=True)
assert hook.init(module, backend, env, say).returncode == 0
(wd / "v.json").write_text(json.dumps({{"seconds": 300}}))
hook.plan(module, wd / "v.json", env, say, out=wd / "p")
hook.apply(module, wd / "p", env, say)
"""


def test_terraform_dies_with_its_task(sandbox, tmp_path):
    """kill -9 of the task's process (nothing of ours runs after it): the tool runner sees its
    parent die, interrupts Terraform and kills what is left after the grace period. (Terraform
    finishes the operation in flight before it unlocks; a 5-minute one outlasts the grace period,
    so the lock stays: the retry of the same run releases it, see test_infrastructure_e2e.)"""
    key = "terraform/test/killed.tfstate"
    wd = tmp_path / "wd"
    wd.mkdir()
    code = KILLED.format(
        plugins=str(REPO / "plugins"),
        repo=str(REPO),
        wd=str(wd),
        module=str(HERE / "slow"),
        endpoint=sandbox.endpoint_url,
        aws=AWS_ENV,
        bucket=LEDGER,
        key=key,
    )
    task = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": sandbox.endpoint_url},
    )
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(iter(task.stdout.readline, "")), daemon=True).start()
    _wait_for(
        lambda: any("$ terraform apply" in line for line in seen) and _exists(sandbox, _lock_key(key)),
        120,
        f"apply never started: {seen[-10:]}",
    )
    time.sleep(2)
    running = _processes(str(wd))
    assert running, "Terraform should be running under the task"
    os.kill(task.pid, signal.SIGKILL)
    task.wait(timeout=10)
    _wait_for(lambda: not _processes(str(wd)), 30, f"Terraform outlived its task: {_processes(str(wd))}")
    shutil.rmtree(wd, ignore_errors=True)


def _processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line and "terraform" in line]


def test_a_tainted_resource_this_release_created_may_be_replaced_nothing_else():
    """Terraform replaces a resource it marked tainted (its create failed half-way). When this
    release's check planned that address as new, the replacement destroys nothing that existed
    before the release, and the apply's retry may go on; any other replacement is still refused."""
    hook = TerraformHook()
    run = TerraformRun(returncode=0, interrupted=False)
    for addr in ("aws_security_group.web", "aws_autoscaling_group.web"):
        resource = {"addr": addr, "resource_type": addr.split(".")[0]}
        change = {"resource": resource, "action": "replace", "reason": "tainted"}
        hook._handle(json.dumps({"type": "planned_change", "change": change}), run, [].append)
    summary = run.plan_summary()
    assert [c.reason for c in summary.changes] == ["tainted", "tainted"]
    created = frozenset({"aws_security_group.web"})  # the check planned only the security group as new
    assert [c.address for c in destroys(summary, (), created)] == ["aws_autoscaling_group.web"]
    assert len(destroys(summary, ())) == 2  # without this release's creations, both are refused
    requested = PlanSummary(0, 0, 1, (ResourceChange("aws_security_group.web", "aws_security_group", "replace"),))
    assert len(destroys(requested, (), created)) == 1  # a replacement for another reason: refused
