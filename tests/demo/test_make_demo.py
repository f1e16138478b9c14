"""The README's main job: a real release through airflow standalone (scheduler, triggerer,
API server) against the sandbox, as `make demo` runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

# the whole-system demo has a worker of its own (group "system"), away from the container test
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("system"), pytest.mark.timeout(1200)]


def test_demo_releases_through_a_real_scheduler_and_triggerer():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox",
            "demo",
            "--api-port",
            "8095",
            "--version",
            "7.7.7",
            "--refresh-batch-seconds",
            "1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert re.search(r"wait_for_refresh\[0\]\s+deferred", text), "the refresh wait did not defer to the triggerer"
    assert re.search(r"demo-web-asg: 3/3 in-service instances on the new AMI", text)
    assert "verification   passed" in text and "release SUCCEEDED" in text
    assert "ledger         succeeded: s3://" in text
    # both releases came from the git repository the demo made, each from its own tag's commit
    commits = re.findall(r"source\s+file://\S+/demo-web\.git (v\S+) = commit ([0-9a-f]{40}) \(deploy/ami\)", text)
    assert [ref for ref, _ in commits] == ["v1.0.0", "v7.7.7"] and commits[0][1] != commits[1][1], commits
    # each bake reached the sandbox's SSH builder and chef-solo got that release's run list and version
    chef = re.findall(
        r"chef-solo\s+over SSH on the sandbox's builder .*? run list (recipe\[linux-base\] \S+), version (\S+),", text
    )
    assert [v for _, v in chef] == ["1.0.0", "7.7.7"], chef
    # the summary's run list is the one chef-solo got (it read empty once the plan stopped carrying it)
    listed = re.findall(r"^   run list +(.*)$", text, re.MULTILINE)
    assert listed == [run for run, _ in chef], (listed, chef)
    # the first release made the fleet with Terraform, the second changed only its image
    assert re.search(r"terraform\s+us-east-1: \d+ to add, 0 to change, 0 to destroy", text), text[-3000:]
    assert re.search(
        r"terraform\s+us-east-1: 0 to add, [1-9]\d* to change, 0 to destroy: .*aws_launch_template\.web", text
    )
    # the second release went through stages (issue 20): staging first, then production behind the gate,
    # which the demo answered through the REST API; production got the same AMI, applied by its own plan
    staging = re.search(r"demo-web-staging-asg: 1/1 in-service instances on the new AMI", text)
    assert staging and "approve waits for input (no worker slot, no lock held)" in text, text[-4000:]
    production = text[text.index("== summary (production)") :]
    assert "gate           approved by admin: make demo: approved through the API" in production, production
    assert re.search(r"demo-web-asg: 3/3 in-service instances on the new AMI", production), production
    assert re.search(
        r"terraform\s+us-east-1: 0 to add, [1-9]\d* to change, 0 to destroy: .*aws_launch_template\.web", production
    )
    assert "verification   passed (the same AMI as staging: one bake)" in production
    # nothing the demo started is left: not Airflow's process group, not OpenBao
    m = re.search(r"processes: airflow standalone group (\d+), openbao (\d+)", text)
    assert m, "the demo did not say which processes it started"
    group, bao = int(m.group(1)), int(m.group(2))
    left = subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    mine = [line for line in left if line.split()[1] == str(group) or line.split()[0] == str(bao)]
    assert mine == [], f"the demo left processes running: {mine}"
